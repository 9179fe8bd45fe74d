//! `cz-bench hostile`: the bad-client suite. Attacks cz-proxy alone (with a laptop connected)
//! and the proxy pod of `czctl service intercept` in the loopback cluster, one attack at a time,
//! while normal clients keep using every route; prints a markdown report and fails when a
//! normal request failed or was slow, the proxy's memory passed its bound, the proxy
//! restarted, or a bad request did not get its answer. See bench/README.md.

mod attack;
mod checks;
mod memory;
mod probe;
mod report;
mod victim;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::attack::{Attack, Outcome};
use self::checks::{AttackRun, TargetRun};
use self::memory::MemorySampler;
use self::probe::Probes;
use self::victim::Victim;
use crate::procs::{rss_mb, CommandLog};
use crate::tools::Tools;

/// How long the normal clients run before the baseline is taken (pools, allocator arenas).
const WARM_UP: Duration = Duration::from_secs(1);
/// How long the baseline is measured: 250 requests per route, enough for a steady p99.
const BASELINE: Duration = Duration::from_secs(10);
/// How long each attack lasts once in place.
const WINDOW: Duration = Duration::from_secs(6);
/// How long an attack may take to be in place (2,000 connections on a debug build).
const IN_PLACE_WITHIN: Duration = Duration::from_secs(60);
/// File descriptors the suite needs: 2,000 idle connections and the connections the proxy
/// opens for them, with room for the rest.
const FILES_NEEDED: u64 = 8_192;

/// Runs the suite against both proxies, prints the report (also to `out`), and returns whether
/// every check passed.
pub async fn run(tools: &Tools, out: Option<&Path>) -> anyhow::Result<bool> {
    raise_open_files_limit()?;
    let dir = std::env::temp_dir().join(format!("cz-bench-hostile-{}", std::process::id()));
    let mut log = CommandLog::default();
    let mut targets = Vec::new();
    for in_cluster in [false, true] {
        let target_dir = dir.join(if in_cluster { "cluster" } else { "alone" });
        std::fs::create_dir_all(&target_dir)?;
        let mut victim = if in_cluster {
            Victim::in_cluster(tools, &target_dir, &mut log).await
        } else {
            Victim::alone(tools, &target_dir, &mut log).await
        }
        .context("starting the proxy to attack")?;
        targets.push(attack_all(&mut victim, tools, &mut log).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let failures: Vec<String> = targets.iter().flat_map(TargetRun::failures).collect();
    let text = report::markdown(&targets, &failures);
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{text}");
    Ok(failures.is_empty())
}

/// The baseline, then every attack in turn against `victim`.
async fn attack_all(
    victim: &mut Victim,
    tools: &Tools,
    log: &mut CommandLog,
) -> anyhow::Result<TargetRun> {
    let addresses = victim.addresses;
    progress(victim.name, "baseline");
    let warm_up = Probes::start(&addresses);
    tokio::time::sleep(WARM_UP).await;
    warm_up.stop().await;
    let memory = MemorySampler::start(victim.pid);
    let probes = Probes::start(&addresses);
    tokio::time::sleep(BASELINE).await;
    let baseline = probes.stop().await;
    let baseline_memory = memory.stop();
    let mut attacks = Vec::new();
    for attack in Attack::all(&addresses) {
        progress(victim.name, &attack.to_string());
        let rss_before = rss_mb(&[victim.pid]);
        let memory = MemorySampler::start(victim.pid);
        let probes = Probes::start(&addresses);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let running = tokio::spawn(attack.run(addresses, ready_tx, stop.clone()));
        let in_place = tokio::time::timeout(IN_PLACE_WITHIN, ready_rx).await;
        if matches!(in_place, Ok(Ok(()))) {
            // Paces the attack: the normal clients measure it for this long.
            tokio::time::sleep(WINDOW).await;
        }
        let routes = probes.stop().await;
        let reconnect = match attack {
            Attack::QuicInitials => victim
                .reconnect_laptop(tools, log)
                .await
                .map(|r| r.map_err(|e| format!("{e:#}"))),
            _ => None,
        };
        stop.cancel();
        let mut outcome = match running.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Outcome {
                failures: vec![format!("the attack stopped early: {error:#}")],
                ..Outcome::default()
            },
            Err(error) => Outcome {
                failures: vec![format!("the attack panicked: {error}")],
                ..Outcome::default()
            },
        };
        if in_place.is_err() {
            outcome.failures.push(format!(
                "the attack was not in place within {IN_PLACE_WITHIN:?}; expected the proxy to \
                 accept (or refuse) its connections promptly"
            ));
        }
        attacks.push(AttackRun {
            attack: attack.to_string(),
            routes,
            outcome,
            rss_before,
            memory: memory.stop(),
            restarts: victim.restarts().await,
            reconnect,
        });
    }
    Ok(TargetRun {
        name: victim.name,
        ip: addresses.ip,
        baseline,
        baseline_memory,
        attacks,
        not_attacked: victim.not_attacked.clone(),
    })
}

fn progress(target: &str, what: &str) {
    eprintln!("[hostile] {target}: {what}");
}

/// Raises this process's soft limit of open files to [`FILES_NEEDED`] (within the hard limit;
/// processes the suite starts inherit it), or says how to.
fn raise_open_files_limit() -> anyhow::Result<()> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut numbers = l.split_whitespace().skip(3);
            let soft = numbers.next()?.parse::<u64>().ok();
            let hard = numbers.next()?;
            Some((soft, hard.parse::<u64>().ok()))
        })
        .context("no open files limit in /proc/self/limits")?;
    // `None` is "unlimited".
    if soft.is_none_or(|soft| soft >= FILES_NEEDED) {
        return Ok(());
    }
    anyhow::ensure!(
        hard.is_none_or(|hard| hard >= FILES_NEEDED),
        "the suite needs {FILES_NEEDED} open files and the hard limit is {hard:?}: raise it \
         (ulimit -Hn {FILES_NEEDED} as root) and run again"
    );
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={FILES_NEEDED}:"))
        .status()
        .context("prlimit (util-linux) is needed to raise the open files limit")?;
    anyhow::ensure!(
        status.success(),
        "prlimit could not raise the open files limit"
    );
    Ok(())
}
