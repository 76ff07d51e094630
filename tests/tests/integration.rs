//! Integration tests: real ZooKeeper and Redis servers started by the harness
//! (`larder_tests`), one module per feature.

/// `on_both_topologies!(f)` runs `async fn f(cluster: bool)` as two tests,
/// `f::standalone` and `f::redis_cluster`. Defined before the modules so each can use it.
macro_rules! on_both_topologies {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$name(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$name(true).await
            }
        }
    };
}

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
