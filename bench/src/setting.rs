//! One worker setting of a full run: every path started side by side, then measured in rounds
//! that go through all paths in turn.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load::{self, Bulk, Latency, Throughput};
use crate::paths::{self, PathKind, Placement};
use crate::procs::{self, CommandLog, CpuTime};
use crate::report::{CpuSplit, Figures, Mode};
use crate::stats::median;
use crate::syscalls::{Counting, SyscallCounter};
use crate::tools::Tools;

/// One worker setting of a run.
pub struct Setting<'a> {
    /// Workers of NGINX and cz-proxy, and where each side runs.
    pub placement: Placement,
    /// How long and how hard each measurement runs.
    pub mode: &'a Mode,
    /// The programs measured and driving the load.
    pub tools: &'a Tools,
    /// Counts system calls per request, when perf is there.
    pub syscalls: Option<SyscallCounter>,
    /// When the whole run started, for its progress lines.
    pub started: Instant,
}

impl Setting<'_> {
    /// Starts every path and measures them. Every figure is measured in rounds that go through
    /// all paths in turn (the median is kept; latency samples of all slices are pooled), so that
    /// load from elsewhere on the machine falls on every path alike. The one-worker setting also
    /// measures the tunnel's carriers, latency, bulk transfers and memory with idle connections.
    pub async fn measure(
        &self,
        dir: &std::path::Path,
        log: &mut CommandLog,
    ) -> anyhow::Result<Vec<(PathKind, Figures)>> {
        let (placement, mode, tools) = (self.placement, self.mode, self.tools);
        let mut running = Vec::new();
        let carriers = if placement.workers == 1 {
            &PathKind::CARRIERS[..]
        } else {
            &[]
        };
        for &kind in PathKind::ALL.iter().chain(carriers) {
            let path_dir = dir.join(format!("{kind:?}-{}", placement.workers));
            std::fs::create_dir_all(&path_dir)?;
            let path = paths::start(kind, placement, tools, &path_dir, log)
                .await
                .with_context(|| format!("starting {kind}"))?;
            load::wait_until_served(path.target)
                .await
                .with_context(|| format!("{kind} does not serve"))?;
            let figures = Figures {
                rss_idle: (!path.measured.is_empty()).then(|| procs::rss_mb(&path.measured)),
                ..Figures::default()
            };
            running.push((kind, path, figures));
        }
        self.progress("warm-up");
        for (_, path, _) in &running {
            // Connection pools, allocator arenas, CPU frequency.
            load::wrk(
                log,
                &tools.wrk,
                placement.rest,
                path.target,
                Duration::from_secs(1),
            )?;
        }
        let mut h1_samples = vec![Vec::new(); running.len()];
        let mut h2_samples = vec![Vec::new(); running.len()];
        for round in 1..=mode.rounds {
            self.progress(&format!("requests/s, round {round} of {}", mode.rounds));
            for ((_, path, _), samples) in running.iter().zip(&mut h1_samples) {
                let cpu_before = procs::cpu_time(&path.measured);
                let laptop_cpu_before = procs::cpu_time(&path.laptop);
                let sampler = procs::PeakSampler::rss(path.measured.clone());
                let h1 = load::wrk(
                    log,
                    &tools.wrk,
                    placement.rest,
                    path.target,
                    mode.rps_duration,
                )?;
                let rss = sampler.stop();
                let per_request = |cpu: CpuTime| CpuSplit::per_request(cpu, h1.requests);
                let cpu = per_request(procs::cpu_time(&path.measured) - cpu_before);
                let laptop_cpu = per_request(procs::cpu_time(&path.laptop) - laptop_cpu_before);
                samples.push((h1, cpu, rss, laptop_cpu));
            }
            for ((_, path, _), samples) in running.iter().zip(&mut h2_samples) {
                samples.push(load::h2load(
                    log,
                    &tools.h2load,
                    placement.rest,
                    path.target,
                    mode.rps_duration,
                )?);
            }
        }
        for (((_, path, figures), h1), h2) in running.iter_mut().zip(h1_samples).zip(h2_samples) {
            figures.h1 = Some(Throughput::median(h1.iter().map(|s| s.0).collect()));
            figures.h2 = Some(Throughput::median(h2));
            if !path.measured.is_empty() {
                figures.cpu_us_per_request = Some(median(h1.iter().map(|s| s.1.total()).collect()));
                figures.cpu_split = Some(CpuSplit::median(h1.iter().map(|s| s.1)));
                figures.rss_load = h1.iter().map(|s| s.2).reduce(f64::max);
            }
            if !path.laptop.is_empty() {
                figures.laptop_cpu_us_per_request =
                    Some(median(h1.iter().map(|s| s.3.total()).collect()));
                figures.laptop_cpu_split = Some(CpuSplit::median(h1.iter().map(|s| s.3)));
            }
            if !path.measured.is_empty() && !path.laptop.is_empty() {
                figures.total_cpu_us_per_request = Some(median(
                    h1.iter().map(|s| s.1.total() + s.3.total()).collect(),
                ));
            }
        }
        if let (1, Some(counter)) = (placement.workers, &self.syscalls) {
            self.progress("system calls per request");
            for (kind, path, figures) in &mut running {
                self.count_syscalls(counter, path, figures, dir, log)
                    .with_context(|| format!("counting the system calls of {kind}"))?;
            }
        }
        if placement.workers == 1 {
            let mut latencies = vec![Vec::new(); running.len()];
            let mut bulks = vec![Vec::new(); running.len()];
            // Latency in short slices through all paths in turn: a stall of the machine (a
            // vCPU descheduled by the host for a millisecond) then falls on every path alike,
            // rather than on whichever path one longer round happened to be measuring.
            let slice = mode.latency_duration / mode.latency_slices as u32;
            for round in 1..=mode.latency_slices {
                self.progress(&format!(
                    "latency, slice {round} of {}",
                    mode.latency_slices
                ));
                for ((_, path, _), samples) in running.iter().zip(&mut latencies) {
                    let rate = mode.latency_rate;
                    samples.extend(load::latency_at_rate(path.target, rate, slice).await?);
                }
            }
            for round in 1..=mode.rounds {
                self.progress(&format!("bulk, round {round} of {}", mode.rounds));
                for ((_, path, _), samples) in running.iter().zip(&mut bulks) {
                    samples.push(load::bulk(path.target, mode.bulk_bytes).await?);
                }
            }
            self.progress("idle connections");
            for (((kind, path, figures), latency), bulk) in
                running.iter_mut().zip(latencies).zip(bulks)
            {
                figures.latency = Some(Latency::of(latency));
                figures.bulk = Some(Bulk {
                    upload: median(bulk.iter().map(|b| b.upload).collect()),
                    download: median(bulk.iter().map(|b| b.download).collect()),
                });
                let cluster_side_alone = PathKind::ALL.contains(kind) && !path.measured.is_empty();
                if cluster_side_alone && !path.target.intercept {
                    let idle = load::idle_connections(path.target, mode.idle_connections).await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    figures.rss_idle_connections = Some(procs::rss_mb(&path.measured));
                    drop(idle);
                }
            }
        }
        Ok(running
            .into_iter()
            .map(|(kind, _, figures)| (kind, figures))
            .collect())
    }

    /// Counts the system calls per request of each side of `path` (not the load generator's,
    /// nor the app's) in an HTTP/1.1 run of its own.
    fn count_syscalls(
        &self,
        counter: &SyscallCounter,
        path: &paths::RunningPath,
        figures: &mut Figures,
        dir: &std::path::Path,
        log: &mut CommandLog,
    ) -> anyhow::Result<()> {
        let run = self.mode.rps_duration.min(Duration::from_secs(3));
        // The count starts before the load and ends after it: idle, neither side makes calls.
        let window = run + Duration::from_secs(1);
        let start = |pids: &[u32]| {
            (!pids.is_empty())
                .then(|| counter.start(&procs::tree(pids), window, dir))
                .transpose()
        };
        let (cluster, laptop) = (start(&path.measured)?, start(&path.laptop)?);
        std::thread::sleep(Duration::from_millis(200));
        let placement = self.placement;
        let h1 = load::wrk(log, &self.tools.wrk, placement.rest, path.target, run)?;
        let per_request = |count: u64| count as f64 / h1.requests.max(1) as f64;
        figures.syscalls_per_request = cluster.map(Counting::finish).transpose()?.map(per_request);
        figures.laptop_syscalls_per_request =
            laptop.map(Counting::finish).transpose()?.map(per_request);
        Ok(())
    }

    fn progress(&self, what: &str) {
        eprintln!(
            "[{:>4.0}s] {} worker(s): {what}",
            self.started.elapsed().as_secs_f64(),
            self.placement.workers
        );
    }
}
