//! `cz-bench`: measures cz-proxy and its tunnel side by side with a direct connection, NGINX and
//! NGINX + rathole, in one run, and prints a markdown report ending in a `ratios:` line.
//!
//! `cargo build --release -p cz-proxy -p czctl -p cz-bench && target/release/cz-bench [--quick]`;
//! see bench/README.md for what is measured and how.

mod app;
mod load;
mod paths;
mod procs;
mod report;
mod tools;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::paths::{PathKind, Placement};
use crate::procs::{CommandLog, Cpus};
use crate::report::{Figures, Mode, Report};
use crate::tools::Tools;

/// Benchmark of cz-proxy and the QUIC tunnel against a direct connection, NGINX, and NGINX plus
/// a rathole tunnel. Needs nginx, wrk, h2load and rathole; installs nothing.
#[derive(Debug, Parser)]
#[command(name = "cz-bench")]
struct Args {
    /// Short runs (under 2 minutes) proving the suite works; figures are rough.
    #[arg(long)]
    quick: bool,
    /// Also write the markdown report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The fixed-response app every path ends at (started by the suite itself).
    #[command(hide = true)]
    App {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Internal::App { port, threads }) = args.command {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
            .block_on(app::serve(port));
    }
    let tools = Tools::find()?;
    let mode = if args.quick {
        Mode::quick()
    } else {
        Mode::full()
    };
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
    for setting in [
        Placement {
            workers: 1,
            cluster: Cpus::Pin(0),
            rest: Cpus::Pin(1),
        },
        Placement {
            workers: 2,
            cluster: Cpus::All,
            rest: Cpus::All,
        },
    ] {
        for kind in PathKind::ALL {
            eprintln!(
                "[{:>4.0}s] {kind}, {} worker(s)",
                started.elapsed().as_secs_f64(),
                setting.workers
            );
            let figures = runtime
                .block_on(measure(kind, setting, &mode, &tools, &dir, &mut log))
                .with_context(|| format!("measuring {kind} with {} worker(s)", setting.workers))?;
            report.add(setting.workers, kind, figures);
        }
    }
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

/// Starts one path and measures it; the one-worker setting measures everything, the two-worker
/// setting requests/s and CPU only.
async fn measure(
    kind: PathKind,
    placement: Placement,
    mode: &Mode,
    tools: &Tools,
    dir: &std::path::Path,
    log: &mut CommandLog,
) -> anyhow::Result<Figures> {
    let path = paths::start(kind, placement, tools, dir, log)?;
    let target = path.target;
    load::wait_until_served(target).await?;
    let measured = path.measured.clone();
    let mut figures = Figures {
        rss_idle: (!measured.is_empty()).then(|| procs::rss_mb(&measured)),
        ..Figures::default()
    };
    // Warm-up: connection pools, allocator arenas, CPU frequency.
    load::wrk(
        log,
        &tools.wrk,
        placement.rest,
        target,
        Duration::from_secs(1),
    )?;

    let cpu_before = procs::cpu_seconds(&measured);
    let sampler = procs::RssSampler::start(measured.clone());
    let h1 = load::wrk(log, &tools.wrk, placement.rest, target, mode.rps_duration)?;
    let rss_load = sampler.stop();
    let cpu = procs::cpu_seconds(&measured) - cpu_before;
    figures.h1 = Some(h1);
    if !measured.is_empty() && h1.requests > 0 {
        figures.cpu_us_per_request = Some(cpu * 1e6 / h1.requests as f64);
        figures.rss_load = Some(rss_load);
    }
    figures.h2 = Some(load::h2load(
        log,
        &tools.h2load,
        placement.rest,
        target,
        mode.rps_duration,
    )?);
    if placement.workers > 1 {
        return Ok(figures);
    }
    figures.latency =
        Some(load::latency_at_rate(target, mode.latency_rate, mode.latency_duration).await?);
    figures.bulk = Some(load::bulk(target, mode.bulk_bytes).await?);
    if !measured.is_empty() && !target.intercept {
        let idle = load::idle_connections(target, mode.idle_connections).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        figures.rss_idle_connections = Some(procs::rss_mb(&measured));
        drop(idle);
    }
    Ok(figures)
}
