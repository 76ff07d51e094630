//! The failover figures, one command:
//!
//! ```sh
//! cargo run -p larder-tests --example failover -- [--runs N] [--down-after-ms MS]
//!     [--probe-interval-ms MS] [--fail-after N] [--failover-tick-ms MS] [--writes-per-s N]
//!     [--replicas N]
//! ```
//!
//! Starts real ZooKeeper and Redis servers (a master and two replicas by default) with
//! one agent per node, a control plane and a gateway on loopback, writes a steady stream
//! through the gateway, kills the master with SIGKILL and prints the time from the kill
//! to the first successful write, the failed requests, the acknowledged writes lost and
//! how long the restarted old master takes to serve as a replica of the new one. Each
//! run starts from scratch. Needs `zookeeper` and `redis-server`
//! (`./deploy/local/test.sh` installs them).

use larder_tests::drill::{Drill, Options};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut options = Options::default();
    let mut runs = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: {v:?} is not a number")))
        };
        match flag.as_str() {
            "--runs" => runs = number(&value).max(1) as usize,
            "--down-after-ms" => options.down_after_ms = number(&value),
            "--probe-interval-ms" => options.probe_interval_ms = number(&value),
            "--fail-after" => options.fail_after = number(&value) as u32,
            "--failover-tick-ms" => options.failover_tick_ms = number(&value),
            "--writes-per-s" => options.writes_per_s = number(&value) as u32,
            "--replicas" => options.replicas = number(&value).max(1) as usize,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let mut first_write = Vec::new();
    for run in 1..=runs {
        let mut drill = Drill::start(options.clone()).await;
        let figures = drill.run().await;
        println!("run {run}/{runs}\n{figures}\n");
        first_write.push(figures.kill_to_first_write.as_millis());
    }
    if runs > 1 {
        first_write.sort_unstable();
        println!(
            "time from kill to first successful write over {runs} runs: min {} ms, median {} ms, max {} ms",
            first_write[0],
            first_write[first_write.len() / 2],
            first_write[first_write.len() - 1]
        );
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "failover: {problem}\nusage: failover [--runs N] [--down-after-ms MS] [--probe-interval-ms MS] \
         [--fail-after N] [--failover-tick-ms MS] [--writes-per-s N] [--replicas N]"
    );
    std::process::exit(2)
}
