//! Integration tests: real ZooKeeper and Redis servers started by the harness
//! (`larder_tests`), one module per feature.

mod agent;
mod binaries;
mod control_plane;
mod end_to_end;
mod failover;
mod faults_processes;
mod faults_zookeeper;
mod gateway;
mod harness;
mod isolation;
mod larderctl;
mod leadership;
mod near_cache;
mod observability;
mod overload;
mod propagation;
mod queues;
mod registry;
