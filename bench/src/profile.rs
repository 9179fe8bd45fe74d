//! `cz-bench profile passthrough|laptop`: where one side's time goes. Drives one path at a
//! fixed request rate and writes, in `--out`, `LABEL-SIDE.svg` (a flame graph of the profiled
//! process's CPU time, from perf), `LABEL-SIDE.txt` (CPU time and instructions per request,
//! the costliest functions), `LABEL-SIDE.callgrind` (the instruction counts, for
//! `callgrind_annotate` or KCachegrind) and `LABEL-SIDE.folded` (perf's stacks, for
//! `inferno-diff-folded`). See bench/README.md, "Where the time goes".

mod callgrind;
mod perf;
mod report;
mod stacks;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1::SendRequest;

use self::callgrind::Callgrind;
use self::perf::Perf;
use self::report::{Instructions, Summary, Timing};
use self::stacks::Folded;
use crate::load::{self, ClientBody, Target};
use crate::paths::{start_app, start_cz_proxy, start_laptop_with, Placement};
use crate::procs::{CommandLog, Cpus, Process};
use crate::tools::Tools;

/// The arguments of `cz-bench profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The side to profile: cz-proxy passing requests through to the app, or czctl serving
    /// intercepted requests from the app.
    side: Side,
    /// Fixed request rate of the timed runs, over 32 keep-alive connections.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(32..))]
    rate: u32,
    /// Length of each timed run: the CPU time window, then the perf recording.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Requests counted under callgrind for the instructions per request.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    counted: u64,
    /// Directory of the output files.
    #[arg(long, value_name = "DIR", default_value = "bench/profiles")]
    out: PathBuf,
    /// First part of the output files' names, e.g. `before` or `after-pool`.
    #[arg(long, default_value = "before")]
    label: String,
    /// An argument for czctl on the laptop side, e.g. `--czctl-arg=--inspect=127.0.0.1:0`
    /// (repeatable).
    #[arg(long = "czctl-arg", value_name = "ARG", allow_hyphen_values = true)]
    czctl_args: Vec<String>,
}

/// The process a profile looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// cz-proxy, for HTTP/1.1 requests without the intercept header (to the app).
    Passthrough,
    /// czctl, for HTTP/1.1 requests with the intercept header (through cz-proxy and the QUIC
    /// tunnel to czctl, then the app).
    Laptop,
}

impl Side {
    /// The name in the output files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Laptop => "laptop",
        }
    }

    /// The profiled program.
    fn program(self, tools: &Tools) -> &Path {
        match self {
            Self::Passthrough => &tools.cz_proxy,
            Self::Laptop => &tools.czctl,
        }
    }
}

/// Requests before the callgrind counters are zeroed: connection pools, allocator arenas.
const WARM_UP_REQUESTS: u64 = 500;
/// Timed load before the CPU time window, for the same reasons.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long a path under callgrind may take to serve its first request (each try waits 10 s).
const STARTING_TRIES: u32 = 6;

/// Profiles `args.side` and writes the output files.
pub async fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    let tools = Tools::find()?;
    let perf = Perf::find()?;
    let callgrind = Callgrind::find()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let dir = std::env::temp_dir().join(format!("cz-bench-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = profile(args, &tools, &perf, &callgrind, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let written = outcome?;
    for file in written {
        println!("wrote {}", file.display());
    }
    Ok(())
}

/// The timed runs, the counted run and the output files; returns the files.
async fn profile(
    args: &ProfileArgs,
    tools: &Tools,
    perf: &Perf,
    callgrind: &Callgrind,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut log = CommandLog::default();
    let named = |kind: &str| {
        let name = format!("{}-{}.{kind}", args.label, args.side.name());
        args.out.join(name)
    };
    let path = ProfiledPath::start(args, tools, None, dir, &mut log).await?;
    eprintln!("timing {} at {} req/s", args.side.name(), args.rate);
    let (timing, folded) = time(&path, args, perf, dir).await?;
    drop(path);
    let mut under_callgrind = tools.clone();
    let wrapper = callgrind.wrapper(args.side.program(tools), dir)?;
    match args.side {
        Side::Passthrough => under_callgrind.cz_proxy = wrapper,
        Side::Laptop => under_callgrind.czctl = wrapper,
    }
    eprintln!(
        "counting instructions of {} requests under callgrind",
        args.counted
    );
    let path = ProfiledPath::start(args, &under_callgrind, Some(tools), dir, &mut log).await?;
    let (instructions, dump) = count_instructions(&path, args.counted, callgrind, dir).await?;
    drop(path);
    let summary = Summary {
        side: args.side,
        label: &args.label,
        timing,
        instructions,
    };
    let files = ["svg", "txt", "callgrind", "folded"].map(named);
    perf::flame_graph(&folded, &summary.title(), &summary.subtitle(), &files[0])?;
    std::fs::write(&files[1], summary.text())
        .with_context(|| format!("writing {}", files[1].display()))?;
    std::fs::copy(&dump, &files[2]).with_context(|| format!("writing {}", files[2].display()))?;
    std::fs::write(&files[3], &folded)
        .with_context(|| format!("writing {}", files[3].display()))?;
    Ok(files.into())
}

/// CPU time per request over a window at the fixed rate, then a perf recording of another
/// window; returns the figures and the recording's folded stacks.
async fn time(
    path: &ProfiledPath,
    args: &ProfileArgs,
    perf: &Perf,
    dir: &Path,
) -> anyhow::Result<(Timing, String)> {
    let window = Duration::from_secs(args.seconds);
    load::latency_at_rate(path.target, args.rate, WARM_UP).await?;
    let cpu_before = cpu_time(path.pid)?;
    let latencies = load::latency_at_rate(path.target, args.rate, window).await?;
    let cpu = cpu_time(path.pid)? - cpu_before;
    // The load outlasts the recording by a second at each end.
    let recording = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let data = dir.join("perf.data");
        perf.record(path.pid, window, &data)?.finish().await
    };
    let (load, data) = tokio::join!(
        load::latency_at_rate(path.target, args.rate, window + Duration::from_secs(2)),
        recording
    );
    load?;
    let folded = perf.fold(&data?)?;
    let samples = Folded::parse(&folded);
    let timing = Timing {
        rate: args.rate,
        window,
        requests: latencies.len() as u64,
        cpu,
        latency: load::Latency::of(latencies),
        samples,
    };
    Ok((timing, folded))
}

/// Instructions of exactly `counted` requests, sent one at a time on one keep-alive
/// connection, after [`WARM_UP_REQUESTS`]; returns them and the dump they were read from.
async fn count_instructions(
    path: &ProfiledPath,
    counted: u64,
    callgrind: &Callgrind,
    dir: &Path,
) -> anyhow::Result<(Instructions, PathBuf)> {
    let mut sender = load::connect(path.target.ip, path.target.h1_port).await?;
    send_one_at_a_time(&mut sender, path.target, WARM_UP_REQUESTS).await?;
    callgrind.zero(path.pid)?;
    send_one_at_a_time(&mut sender, path.target, counted).await?;
    let (dump, file) = callgrind.dump(path.pid, dir)?;
    let instructions = Instructions {
        requests: counted,
        warm_up: WARM_UP_REQUESTS,
        dump,
    };
    Ok((instructions, file))
}

/// Sends `requests` GET requests on `sender`, each once the previous one is answered.
async fn send_one_at_a_time(
    sender: &mut SendRequest<ClientBody>,
    target: Target,
    requests: u64,
) -> anyhow::Result<()> {
    for _ in 0..requests {
        let request = load::request(target, "/", Either::Left(Empty::new()));
        load::exchange(sender, request).await?;
    }
    Ok(())
}

/// CPU time of every thread of process `pid` so far: each thread's run time from
/// `/proc/PID/task/TID/schedstat`, in nanoseconds (utime + stime of `/proc/PID/stat` count the
/// same in 10 ms ticks, a few percent of a window at a few thousand requests/s).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let schedstat = task?.path().join("schedstat");
        // A thread may exit between the listing and the read: it no longer runs.
        let Ok(text) = std::fs::read_to_string(&schedstat) else {
            continue;
        };
        nanos += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("{} says {text:?}", schedstat.display()))?;
    }
    Ok(Duration::from_nanos(nanos))
}

/// The processes of a profiled path, stopped when dropped.
struct ProfiledPath {
    /// Where the load goes.
    target: Target,
    /// The profiled process: cz-proxy or czctl.
    pid: u32,
    _processes: Vec<Process>,
}

impl ProfiledPath {
    /// Starts the app, cz-proxy and, for the laptop side, czctl, from `tools`; the side that is
    /// not profiled from `unprofiled` when given (so that only the profiled one runs under
    /// callgrind). Placed as the suite's one-worker runs: cz-proxy on CPU 0 with one worker
    /// thread, the rest on CPU 1.
    async fn start(
        args: &ProfileArgs,
        tools: &Tools,
        unprofiled: Option<&Tools>,
        dir: &Path,
        log: &mut CommandLog,
    ) -> anyhow::Result<Self> {
        let placement = Placement {
            workers: 1,
            cluster: Cpus::Pin(0),
            rest: Cpus::Pin(1),
        };
        let side = args.side;
        let unprofiled = unprofiled.unwrap_or(tools);
        let (app, app_port) = start_app(placement, log)?;
        let proxy_tools = match side {
            Side::Passthrough => tools,
            Side::Laptop => unprofiled,
        };
        let (proxy, ports) = start_cz_proxy(proxy_tools, placement, app_port, &[], dir, log)?;
        let mut processes = vec![proxy, app];
        let pid = match side {
            Side::Passthrough => processes[0].pid(),
            Side::Laptop => {
                let cpus = placement.rest;
                let czctl =
                    start_laptop_with(tools, cpus, &ports, app_port, &args.czctl_args, log)?;
                let pid = czctl.pid();
                processes.insert(0, czctl);
                pid
            }
        };
        let path = Self {
            target: Target {
                ip: Ipv4Addr::LOCALHOST,
                h1_port: ports.http,
                h2_port: ports.http,
                intercept: side == Side::Laptop,
            },
            pid,
            _processes: processes,
        };
        let mut tries = 1;
        while let Err(error) = load::wait_until_served(path.target).await {
            anyhow::ensure!(tries < STARTING_TRIES, error);
            tries += 1;
        }
        Ok(path)
    }
}
