//! Integration tests: real ZooKeeper and Redis servers started by the harness
//! (`larder_tests`), one module per feature.

mod binaries;
mod end_to_end;
mod harness;
mod registry;
