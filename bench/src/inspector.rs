//! `cz-bench inspector`: what czctl's request inspector costs on the intercepted path. cz-proxy
//! and its app stay up; czctl (`tunnel connect`) is restarted with the inspector off and on in
//! turn, round after round (the order alternating), and wrk drives the intercepted port at
//! full speed each time: requests/s, czctl's CPU per request and its memory afterwards, as
//! medians with their spread.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::load::{self, Target};
use crate::paths::{start_app, start_cz_proxy, start_laptop_with, Placement, ProxyPorts};
use crate::procs::{self, CommandLog, Cpus};
use crate::stats::median;
use crate::tools::Tools;

/// Arguments of `cz-bench inspector`.
#[derive(Debug, Args)]
pub struct InspectorArgs {
    /// On/off pairs measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// One measurement of czctl with the inspector on or off.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    errors: u64,
    /// czctl's CPU time per request, µs.
    cpu_us: f64,
    /// czctl's resident memory after the load, MB.
    rss_mb: f64,
}

/// Measures and prints the report.
pub async fn run(tools: &Tools, args: &InspectorArgs) -> anyhow::Result<()> {
    let placement = Placement {
        workers: 1,
        cluster: Cpus::Pin(0),
        rest: Cpus::Pin(1),
    };
    let dir = std::env::temp_dir().join(format!("cz-bench-inspector-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut log = CommandLog::default();
    let (_app, app_port) = start_app(placement, &mut log)?;
    let (_proxy, ports) = start_cz_proxy(tools, placement, app_port, &[], &dir, &mut log)?;
    let target = Target {
        ip: std::net::Ipv4Addr::LOCALHOST,
        h1_port: ports.http,
        h2_port: ports.http,
        intercept: true,
    };
    let bench = Bench {
        tools,
        placement,
        ports,
        app_port,
        target,
        duration: Duration::from_secs(args.seconds),
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Alternating order, so a drift of the machine's load falls on both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for inspect in order {
            let state = if inspect { "on" } else { "off" };
            let measured = bench
                .measure(inspect, &mut log)
                .await
                .with_context(|| format!("round {round}, inspector {state}"))?;
            eprintln!(
                "round {round}: inspector {state:3} {:>8.0} requests/s, {:.1} µs CPU/request, {:.1} MB",
                measured.rps, measured.cpu_us, measured.rss_mb
            );
            if inspect {
                on.push(measured);
            } else {
                off.push(measured);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let text = report(&off, &on, args, &log);
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{text}");
    Ok(())
}

/// What stays up between measurements: the app and cz-proxy, and how the load is run.
struct Bench<'a> {
    tools: &'a Tools,
    placement: Placement,
    ports: ProxyPorts,
    app_port: u16,
    target: Target,
    duration: Duration,
}

impl Bench<'_> {
    /// czctl started with the inspector on (`inspect`) or off, warmed up, then measured.
    async fn measure(&self, inspect: bool, log: &mut CommandLog) -> anyhow::Result<Run> {
        let flag = if inspect {
            "--inspect=127.0.0.1:0"
        } else {
            "--inspect=off"
        };
        let (tools, cpus) = (self.tools, self.placement.rest);
        let czctl =
            start_laptop_with(tools, cpus, &self.ports, self.app_port, &[flag.into()], log)?;
        load::wait_until_served(self.target).await?;
        load::wrk(log, &tools.wrk, cpus, self.target, Duration::from_secs(2))?;
        let cpu_before = procs::cpu_time(&[czctl.pid()]);
        let throughput = load::wrk(log, &tools.wrk, cpus, self.target, self.duration)?;
        let cpu = (procs::cpu_time(&[czctl.pid()]) - cpu_before).total();
        Ok(Run {
            rps: throughput.rps,
            errors: throughput.errors,
            cpu_us: cpu * 1e6 / throughput.requests.max(1) as f64,
            rss_mb: procs::rss_mb(&[czctl.pid()]),
        })
    }
}

/// `median (min–max)` of one figure over runs.
fn spread(runs: &[Run], figure: impl Fn(&Run) -> f64, digits: usize) -> String {
    let values: Vec<f64> = runs.iter().map(&figure).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.digits$} ({min:.digits$}–{max:.digits$})",
        median(values)
    )
}

fn report(off: &[Run], on: &[Run], args: &InspectorArgs, log: &CommandLog) -> String {
    let rps = |runs: &[Run]| median(runs.iter().map(|run| run.rps).collect());
    let ratios: Vec<f64> = off
        .iter()
        .zip(on)
        .map(|(off, on)| on.rps / off.rps)
        .collect();
    let errors: u64 = off.iter().chain(on).map(|run| run.errors).sum();
    let mut text = format!(
        "# czctl's request inspector: intercepted requests/s with it on and off\n\n\
         cz-proxy + QUIC tunnel intercepted, one worker (cz-proxy on CPU 0; czctl, the app and wrk \
         with 64 connections on CPU 1), {} on/off pairs of {} s each, order alternating; median \
         (min–max). The inspector captures every request (ring of 500, bodies up to 1 MiB).\n\n\
         | inspector | requests/s | czctl CPU µs/request | czctl RSS MB after |\n|---|---|---|---|\n",
        args.rounds, args.seconds
    );
    for (name, runs) in [("off", off), ("on", on)] {
        text.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            spread(runs, |run| run.rps, 0),
            spread(runs, |run| run.cpu_us, 1),
            spread(runs, |run| run.rss_mb, 1),
        ));
    }
    let ratio_min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio_max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    text.push_str(&format!(
        "\non/off requests/s: {:.3} (medians), per pair {:.3}–{:.3} (median {:.3}); errors: {errors}\n",
        rps(on) / rps(off),
        ratio_min,
        ratio_max,
        median(ratios.clone()),
    ));
    text.push_str("\nCommands:\n\n```\n");
    for line in &log.0 {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("```\n");
    text
}
