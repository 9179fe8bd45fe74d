//! `cz-bench`: measures cz-proxy and its tunnel side by side with a direct connection, NGINX and
//! NGINX + rathole, in one run, and prints a markdown report ending in a `ratios:` line.
//!
//! `cargo build --release -p cz-proxy -p czctl -p cz-bench && target/release/cz-bench [--quick]`;
//! see bench/README.md for what is measured and how.

mod app;
mod hostile;
mod inspector;
mod load;
mod paths;
mod procs;
mod profile;
mod report;
mod setting;
mod startup;
mod stats;
mod syscalls;
mod tools;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::paths::Placement;
use crate::procs::{CommandLog, Cpus};
use crate::report::{Mode, Report};
use crate::setting::Setting;
use crate::syscalls::SyscallCounter;
use crate::tools::Tools;

/// Benchmark of cz-proxy and the QUIC tunnel against a direct connection, NGINX, and NGINX plus
/// a rathole tunnel. Needs nginx, wrk, h2load and rathole; installs nothing.
#[derive(Debug, Parser)]
#[command(name = "cz-bench")]
struct Args {
    /// Short runs (under 2 minutes) proving the suite works; figures are rough.
    #[arg(long)]
    quick: bool,
    /// Rounds through all paths (medians kept); overrides the mode's 3 (full) or 1 (quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    rounds: Option<u16>,
    /// Fixed request rate of the latency runs; overrides the mode's 5000 (full) or 1000 (quick).
    #[arg(long, value_name = "REQ_PER_S", value_parser = clap::value_parser!(u32).range(32..))]
    latency_rate: Option<u32>,
    /// Also write the markdown report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The bad-client suite: attacks cz-proxy alone and through the loopback Service while
    /// normal clients keep using it; exits non-zero when a check fails (see bench/README.md).
    Hostile {
        /// Also write the markdown report to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Where one side's time goes: drives one path at a fixed rate and writes a flame graph
    /// (perf), CPU time and instructions (callgrind) per request, and the costliest functions
    /// (see bench/README.md). Needs perf and valgrind.
    Profile(profile::ProfileArgs),
    /// What czctl's request inspector costs: intercepted requests/s, czctl's CPU per request
    /// and memory, with the inspector off and on in turn (see bench/README.md).
    Inspector(inspector::InspectorArgs),
    /// The fixed-response app every path ends at (started by the suite itself).
    #[command(hide = true)]
    App {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// A local port forwarded to a pod through the API server, one port-forward per connection
    /// (started by the suite itself).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
        #[arg(long)]
        pod_port: u16,
        #[arg(long)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Internal::App { port, threads }) => {
            return tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
                .block_on(app::serve(port));
        }
        Some(Internal::Forward {
            kubeconfig,
            namespace,
            pod,
            pod_port,
            port,
        }) => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(paths::forward(kubeconfig, namespace, pod, pod_port, port));
        }
        Some(Internal::Hostile { out }) => {
            let tools = Tools::find()?;
            let passed = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(hostile::run(&tools, out.as_deref()))?;
            if !passed {
                eprintln!("cz-bench hostile: some checks failed (listed at the end of the report)");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Internal::Inspector(args)) => {
            let tools = Tools::find()?;
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(inspector::run(&tools, &args));
        }
        Some(Internal::Profile(args)) => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(profile::run(&args));
        }
        None => {}
    }
    let tools = Tools::find()?;
    let mut mode = if args.quick {
        Mode::quick()
    } else {
        Mode::full()
    };
    if let Some(rounds) = args.rounds {
        mode.rounds = rounds.into();
    }
    if let Some(rate) = args.latency_rate {
        mode.latency_rate = rate;
    }
    // The suite's own load (latency, bulk, idle connections) runs beside the load generators.
    let pinned = Command::new("taskset")
        .args(["-a", "-c", "-p", "1", &std::process::id().to_string()])
        .output()
        .context("taskset (util-linux) is needed to pin processes")?;
    anyhow::ensure!(pinned.status.success(), "could not pin cz-bench to CPU 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("cz-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let mut log = CommandLog::default();
    let mut report = Report::new(mode.clone(), tools.versions());
    let one_worker = Placement {
        workers: 1,
        cluster: Cpus::Pin(0),
        rest: Cpus::Pin(1),
    };
    for placement in [
        one_worker,
        Placement {
            workers: 2,
            cluster: Cpus::All,
            rest: Cpus::All,
        },
    ] {
        let setting = Setting {
            placement,
            mode: &mode,
            tools: &tools,
            syscalls: SyscallCounter::find(),
            started,
        };
        let figures = runtime
            .block_on(setting.measure(&dir, &mut log))
            .with_context(|| format!("measuring with {} worker(s)", placement.workers))?;
        for (kind, figures) in figures {
            report.add(placement.workers, kind, figures);
        }
    }
    eprintln!(
        "[{:>4.0}s] intercept start-up, {} runs",
        started.elapsed().as_secs_f64(),
        mode.startup_runs
    );
    let startup_dir = dir.join("startup");
    let startup = startup::measure(
        &tools,
        one_worker,
        mode.startup_runs,
        &startup_dir,
        &mut log,
    );
    report.startup = Some(
        runtime
            .block_on(startup)
            .context("measuring the intercept's start-up time")?,
    );
    let _ = std::fs::remove_dir_all(&dir);
    report.commands = log.0;
    report.elapsed = started.elapsed();
    let text = report.markdown();
    if let Some(out) = args.out {
        std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{text}");
    println!("{}", report.ratios_line());
    Ok(())
}
