//! The figures of a run and their markdown report: absolute figures, ratios against direct and
//! against NGINX, the issue's targets, the machine, the exact command lines, the `ratios:` line.

mod carriers;
mod cost;
mod machine;
mod ratios;
mod startup;
mod targets;

pub use cost::CpuSplit;

use std::fmt::Write;
use std::time::Duration;

use crate::load::{Bulk, Latency, Throughput};
use crate::paths::PathKind;
use crate::startup::StartupTimes;

/// One figure of a path's [`Figures`], when measured.
type Figure = fn(&Figures) -> Option<f64>;

/// How long and how hard each measurement runs.
#[derive(Debug, Clone)]
pub struct Mode {
    /// `quick` or `full`.
    pub name: &'static str,
    /// Each wrk and h2load run.
    pub rps_duration: Duration,
    /// Rounds of measurements through all paths; the median is kept.
    pub rounds: usize,
    /// The fixed request rate of the latency run.
    pub latency_rate: u32,
    /// The latency run of each path, in slices that go through all paths in turn.
    pub latency_duration: Duration,
    /// Slices of the latency run.
    pub latency_slices: usize,
    /// Size of the upload and of the download.
    pub bulk_bytes: u64,
    /// Idle keep-alive connections held open for the memory figure.
    pub idle_connections: usize,
    /// Intercepts started and stopped for the start-up time.
    pub startup_runs: usize,
}

impl Mode {
    /// The full run of bench/RESULTS.md.
    pub fn full() -> Self {
        Self {
            name: "full",
            rps_duration: Duration::from_secs(5),
            rounds: 3,
            latency_rate: 5_000,
            latency_duration: Duration::from_secs(12),
            latency_slices: 6,
            bulk_bytes: 256 << 20,
            idle_connections: 2_000,
            startup_runs: 5,
        }
    }

    /// Under 2 minutes: proves the suite runs (CI), figures rough.
    pub fn quick() -> Self {
        Self {
            name: "quick",
            rps_duration: Duration::from_secs(2),
            rounds: 1,
            latency_rate: 1_000,
            latency_duration: Duration::from_secs(1),
            latency_slices: 1,
            bulk_bytes: 8 << 20,
            idle_connections: 200,
            startup_runs: 3,
        }
    }
}

/// What was measured on one path with one worker setting; `None` where not measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// wrk, HTTP/1.1.
    pub h1: Option<Throughput>,
    /// h2load, HTTP/2.
    pub h2: Option<Throughput>,
    /// At the fixed rate.
    pub latency: Option<Latency>,
    /// Cluster-side CPU time per request of the HTTP/1.1 run, µs.
    pub cpu_us_per_request: Option<f64>,
    /// Laptop-side (tunnel client) CPU time per request of the HTTP/1.1 run, µs.
    pub laptop_cpu_us_per_request: Option<f64>,
    /// The cluster side's CPU time per request, split (medians over the rounds).
    pub cpu_split: Option<CpuSplit>,
    /// The laptop side's CPU time per request, split (medians over the rounds).
    pub laptop_cpu_split: Option<CpuSplit>,
    /// The cluster side's system calls per request, in an HTTP/1.1 run of their own.
    pub syscalls_per_request: Option<f64>,
    /// The laptop side's system calls per request, in the same run.
    pub laptop_syscalls_per_request: Option<f64>,
    /// Cluster side and laptop side together per request of the HTTP/1.1 run (the median of
    /// each round's sum), µs: a tunnel's whole cost.
    pub total_cpu_us_per_request: Option<f64>,
    /// Cluster-side RSS after start-up and one request, MB.
    pub rss_idle: Option<f64>,
    /// Peak cluster-side RSS during the HTTP/1.1 run, MB.
    pub rss_load: Option<f64>,
    /// Cluster-side RSS with the idle keep-alive connections open, MB.
    pub rss_idle_connections: Option<f64>,
    /// Upload and download.
    pub bulk: Option<Bulk>,
}

impl Figures {
    fn h1_rps(&self) -> Option<f64> {
        self.h1.map(|t| t.rps)
    }
    fn h2_rps(&self) -> Option<f64> {
        self.h2.map(|t| t.rps)
    }
    fn cpu(&self) -> Option<f64> {
        self.cpu_us_per_request
    }
    fn laptop_cpu(&self) -> Option<f64> {
        self.laptop_cpu_us_per_request
    }
    fn total_cpu(&self) -> Option<f64> {
        self.total_cpu_us_per_request
    }
    fn errors(&self) -> u64 {
        self.h1.map_or(0, |t| t.errors) + self.h2.map_or(0, |t| t.errors)
    }
    /// Bulk MB/s: the mean of upload and download.
    fn bulk_mbps(&self) -> Option<f64> {
        self.bulk.map(|b| (b.upload + b.download) / 2.0)
    }
}

/// A whole run.
pub struct Report {
    mode: Mode,
    tool_versions: Vec<String>,
    results: Vec<(u8, PathKind, Figures)>,
    /// The command lines that ran.
    pub commands: Vec<String>,
    /// How long the run took.
    pub elapsed: Duration,
    /// The intercept's start-up runs, when measured.
    pub startup: Option<StartupTimes>,
}

impl Report {
    /// An empty report of a run in `mode`.
    pub fn new(mode: Mode, tool_versions: Vec<String>) -> Self {
        Self {
            mode,
            tool_versions,
            results: Vec::new(),
            commands: Vec::new(),
            elapsed: Duration::ZERO,
            startup: None,
        }
    }

    /// Records the figures of `kind` with `workers` workers.
    pub fn add(&mut self, workers: u8, kind: PathKind, figures: Figures) {
        self.results.push((workers, kind, figures));
    }

    fn get(&self, workers: u8, kind: PathKind) -> Option<&Figures> {
        self.results
            .iter()
            .find(|(w, k, _)| *w == workers && *k == kind)
            .map(|(_, _, f)| f)
    }

    /// `cz / other` of a figure, when both exist.
    fn ratio(
        &self,
        workers: u8,
        cz: PathKind,
        other: PathKind,
        figure: fn(&Figures) -> Option<f64>,
    ) -> Option<f64> {
        let (cz, other) = (self.get(workers, cz)?, self.get(workers, other)?);
        Some(figure(cz)? / figure(other)?)
    }

    /// Added p99 (or p50) latency of a path versus direct, µs.
    fn added(&self, kind: PathKind, percentile: fn(&Latency) -> f64) -> Option<f64> {
        let path = self.get(1, kind)?.latency?;
        let direct = self.get(1, PathKind::Direct)?.latency?;
        Some(percentile(&path) - percentile(&direct))
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# cz-bench results ({} run, {:.0} s)\n",
            self.mode.name,
            self.elapsed.as_secs_f64()
        );
        self.one_worker_table(&mut md);
        self.ratio_table(&mut md);
        self.cost_table(&mut md);
        self.carrier_table(&mut md);
        self.startup_table(&mut md);
        self.two_worker_table(&mut md);
        self.targets(&mut md);
        self.method(&mut md);
        md
    }

    fn one_worker_table(&self, md: &mut String) {
        let mode = &self.mode;
        let _ = writeln!(
            md,
            "## One worker: NGINX `worker_processes 1`, cz-proxy `--worker-threads 1`\n\n\
             Cluster side (NGINX, rathole server, cz-proxy) pinned to CPU 0; load generators, the app and \
             the laptop side (rathole client, czctl) to CPU 1. Every figure is measured in {} rounds going \
             through all paths in turn. Requests/s and CPU: 64 connections, {} s per round, median; \
             latency: {} req/s over 32 connections, {} s per path in {} slices interleaved with the other paths', all samples pooled; bulk: {} MiB \
             each way on one connection, median; memory: the cluster side's.\n",
            mode.rounds,
            mode.rps_duration.as_secs(),
            mode.latency_rate,
            mode.latency_duration.as_secs_f64(),
            mode.latency_slices,
            mode.bulk_bytes >> 20
        );
        let _ = writeln!(
            md,
            "| path | HTTP/1.1 req/s | HTTP/2 req/s | p50 µs | p99 µs | p99.9 µs | added p50 / p99 µs | CPU µs/req | laptop CPU µs/req | \
             total CPU µs/req | RSS idle MB | RSS load MB | RSS {} conns MB | upload MB/s | download MB/s | errors |",
            mode.idle_connections
        );
        let _ = writeln!(
            md,
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for kind in PathKind::ALL {
            let Some(f) = self.get(1, kind) else { continue };
            let added = match (self.added(kind, |l| l.p50), self.added(kind, |l| l.p99)) {
                (Some(p50), Some(p99)) if kind != PathKind::Direct => {
                    format!("{p50:+.0} / {p99:+.0}")
                }
                _ => "—".into(),
            };
            let _ = writeln!(
                md,
                "| {kind} | {} | {} | {} | {} | {} | {added} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(f.h1_rps(), 0),
                num(f.h2_rps(), 0),
                num(f.latency.map(|l| l.p50), 0),
                num(f.latency.map(|l| l.p99), 0),
                num(f.latency.map(|l| l.p999), 0),
                num(f.cpu_us_per_request, 1),
                num(f.laptop_cpu_us_per_request, 1),
                num(f.total_cpu_us_per_request, 1),
                num(f.rss_idle, 1),
                num(f.rss_load, 1),
                num(f.rss_idle_connections, 1),
                num(f.bulk.map(|b| b.upload), 0),
                num(f.bulk.map(|b| b.download), 0),
                f.errors(),
            );
        }
        md.push('\n');
    }

    fn ratio_table(&self, md: &mut String) {
        use PathKind::*;
        let _ = writeln!(
            md,
            "## Ratios, one worker (cz-proxy ÷ other; above 1 is better for req/s and MB/s, below 1 for CPU, latency and memory)\n\n\
             | figure | pass-through ÷ NGINX | pass-through ÷ direct | intercepted ÷ NGINX + rathole | intercepted ÷ direct |\n\
             |---|--:|--:|--:|--:|"
        );
        let rows: [(&str, Figure, bool); 11] = [
            ("HTTP/1.1 req/s", Figures::h1_rps, true),
            ("HTTP/2 req/s", Figures::h2_rps, true),
            ("p99 latency", |f| f.latency.map(|l| l.p99), true),
            ("CPU per request", Figures::cpu, false),
            ("laptop CPU per request", Figures::laptop_cpu, false),
            ("total CPU per request", Figures::total_cpu, false),
            ("RSS idle", |f| f.rss_idle, false),
            ("RSS under load", |f| f.rss_load, false),
            (
                "RSS with idle connections",
                |f| f.rss_idle_connections,
                false,
            ),
            ("upload MB/s", |f| f.bulk.map(|b| b.upload), true),
            ("download MB/s", |f| f.bulk.map(|b| b.download), true),
        ];
        for (name, figure, versus_direct) in rows {
            let direct = |cz| {
                versus_direct
                    .then(|| self.ratio(1, cz, Direct, figure))
                    .flatten()
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} |",
                num(self.ratio(1, CzPassthrough, NginxPassthrough, figure), 2),
                num(direct(CzPassthrough), 2),
                num(self.ratio(1, CzTunnel, NginxTunnel, figure), 2),
                num(direct(CzTunnel), 2),
            );
        }
        md.push('\n');
    }

    fn two_worker_table(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## Two workers: NGINX `worker_processes 2`, cz-proxy `--worker-threads 2`, nothing pinned\n\n\
             | path | HTTP/1.1 req/s | HTTP/2 req/s | CPU µs/req | req/s ÷ NGINX counterpart | CPU ÷ NGINX counterpart | errors |\n\
             |---|--:|--:|--:|--:|--:|--:|"
        );
        for kind in PathKind::ALL {
            let Some(f) = self.get(2, kind) else { continue };
            let versus = |figure: fn(&Figures) -> Option<f64>| {
                kind.nginx_counterpart()
                    .and_then(|nginx| self.ratio(2, kind, nginx, figure))
            };
            let _ = writeln!(
                md,
                "| {kind} | {} | {} | {} | {} | {} | {} |",
                num(f.h1_rps(), 0),
                num(f.h2_rps(), 0),
                num(f.cpu_us_per_request, 1),
                num(versus(Figures::h1_rps), 2),
                num(versus(|f| f.cpu_us_per_request), 2),
                f.errors(),
            );
        }
        md.push('\n');
    }

    fn method(&self, md: &mut String) {
        let _ = writeln!(md, "## Machine\n");
        for line in machine::describe()
            .into_iter()
            .chain(self.tool_versions.iter().cloned())
        {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(
            md,
            "\n## How\n\n\
             - The app is cz-bench's own fixed-response server (hyper, HTTP/1.1 and h2c): `{}` bytes for \
             small requests, `/bytes/N` for downloads, uploads drained. The same app behind every path.\n\
             - CPU per request: utime + stime of the cluster-side processes (and their children) from \
             /proc/PID/stat over the HTTP/1.1 run, divided by the requests wrk completed; the laptop side \
             (rathole client, czctl) likewise; total: both sides' sum in each round, median over the \
             rounds. RSS: VmRSS from \
             /proc/PID/status, summed over those processes (NGINX: master and workers; NGINX + rathole: \
             also the rathole server).\n\
             - Latency: cz-bench sends at a fixed rate; a request held back by a slow predecessor is timed \
             from when it was due, so stalls are not hidden. HTTP/2 through NGINX reaches the app as HTTP/1.1 (NGINX's proxy \
             speaks only that); cz-proxy keeps HTTP/2.\n\
             - Bulk figure of the ratios line: mean of upload and download MB/s. rathole uses its Noise \
             transport, so both tunnels are encrypted.\n\
             - The NGINX and rathole configurations are written by bench/src/paths.rs (NGINX: `map` on the \
             header, `underscores_in_headers on`, upstream keepalive 64, forwarding headers as cz-proxy \
             adds them, request and response buffering off as cz-proxy streams).\n\
             - Only ratios within one run mean anything on a shared 2-core machine.\n\n\
             ## Command lines\n\n```",
            String::from_utf8_lossy(crate::app::SMALL_RESPONSE).trim_end()
        );
        for command in &self.commands {
            let _ = writeln!(md, "{command}");
        }
        let _ = writeln!(md, "```\n");
    }
}

fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}
