//! `larder-bench`: parse the command line, run one subcommand, print its result.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use larder_bench::{closedloop, openloop, redisbench, reference, report, scale};

// The allocator the gateway uses, so the reference server runs on the same stack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Larder's benchmark and scale harness (see deploy/bench/run.sh for the whole run).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fixed-rate load; latency from each request's intended send time.
    Openloop(openloop::Args),
    /// Peak throughput with wrk, and CPU seconds of the named processes.
    Closedloop(closedloop::Args),
    /// redis-benchmark against Redis, the floor reference.
    RedisBenchmark(redisbench::Args),
    /// Serve the reference: axum + redis with nothing of the gateway (runs until killed).
    ReferenceServer(reference::Args),
    /// Registry scale figures with real gateway and control-plane processes.
    Scale(scale::Args),
    /// Median, spread, ratios and targets of a run; JSON, markdown, docs table.
    Report(report::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.command {
        // The open-loop generator reads its answers on one thread: on cores it shares
        // with the servers it measures, a second worker would mostly add wake-ups.
        Command::Openloop(_) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build()
    .expect("cannot start the runtime");
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Openloop(args) => openloop::run(args).await?.emit(&args.label),
            Command::Closedloop(args) => closedloop::run(args)?.emit(&args.label),
            Command::RedisBenchmark(args) => redisbench::run(args)?.emit(&args.label),
            Command::ReferenceServer(args) => reference::run(args).await,
            Command::Scale(args) => {
                let result = scale::run(args).await?;
                let text = serde_json::to_string_pretty(&result)?;
                if let Some(path) = &args.out {
                    std::fs::write(path, format!("{text}\n"))?;
                }
                println!("{text}");
                Ok(())
            }
            Command::Report(args) => report::run(args).map(|_| ()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
