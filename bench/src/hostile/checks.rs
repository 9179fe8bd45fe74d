//! What the suite measured against one proxy, and the checks on it: every normal request
//! answered, none slower than its route's baseline p99 + [`LATENCY_SLACK`], the proxy's memory
//! under [`MEMORY_BOUND_MIB`], the same proxy process throughout, a laptop able to reconnect.

use std::time::Duration;

use super::attack::Outcome;
use super::memory::MemoryPeaks;
use super::probe::{Route, RouteSamples, Sample};

/// How much slower than its baseline p99 a normal request may be during an attack.
pub const LATENCY_SLACK_MS: f64 = 100.0;
/// A control request (to the app directly) this much slower than its baseline p99 shows that
/// this machine stalled: a slow normal request in flight at the same time is excused.
pub const STALL_MS: f64 = 50.0;
/// The bound on the proxy's memory (VmRSS, and VmRSS plus its sockets' queued bytes), in MiB:
/// half of the 128 Mi limit of the pod czctl deploys, leaving the other half for what neither
/// figure shows (the kernel's per-socket structures, page tables) and for a second burst.
pub const MEMORY_BOUND_MIB: f64 = 64.0;

/// One attack's run.
pub struct AttackRun {
    /// The attack, as the report names it.
    pub attack: String,
    /// What the normal clients saw during it.
    pub routes: Vec<RouteSamples>,
    /// What the attack saw.
    pub outcome: Outcome,
    /// The proxy's VmRSS when it started, in MiB.
    pub rss_before: f64,
    /// The proxy's memory peaks during it.
    pub memory: MemoryPeaks,
    /// The restart checks that failed after it.
    pub restarts: Vec<String>,
    /// A laptop reconnecting during it: how long until served, or why not.
    pub reconnect: Option<Result<Duration, String>>,
}

/// The suite's run against one proxy.
pub struct TargetRun {
    /// The proxy, as the report names it.
    pub name: &'static str,
    /// Its address.
    pub ip: std::net::Ipv4Addr,
    /// What the normal clients saw before any attack.
    pub baseline: Vec<RouteSamples>,
    /// The proxy's memory peaks then.
    pub baseline_memory: MemoryPeaks,
    /// Each attack, in order.
    pub attacks: Vec<AttackRun>,
    /// What was not attacked, and why.
    pub not_attacked: Vec<String>,
}

impl TargetRun {
    /// The baseline p99 of `route`, in ms.
    pub fn baseline_p99(&self, route: Route) -> f64 {
        self.baseline
            .iter()
            .find(|b| b.route == route)
            .map_or(0.0, |b| b.quantile_ms(0.99))
    }

    /// The latency limit of `route`, in ms: its baseline p99 + [`LATENCY_SLACK_MS`].
    pub fn limit_ms(&self, route: Route) -> f64 {
        self.baseline_p99(route) + LATENCY_SLACK_MS
    }

    /// The normal requests of `samples` slower than their route's limit, as (not excused,
    /// excused): a slow request is excused when a control request of the same `run` in flight
    /// at the same time was over [`STALL_MS`] slower than its own baseline p99.
    pub fn slow(&self, samples: &RouteSamples, run: &[RouteSamples]) -> (usize, usize) {
        let stall = self.baseline_p99(Route::Control) + STALL_MS;
        let stalls: Vec<&Sample> = run
            .iter()
            .filter(|r| r.route == Route::Control)
            .flat_map(|r| &r.answered)
            .filter(|s| s.latency_ms > stall)
            .collect();
        let limit = self.limit_ms(samples.route);
        let (excused, not): (Vec<&Sample>, Vec<&Sample>) = samples
            .answered
            .iter()
            .filter(|s| s.latency_ms > limit)
            .partition(|s| stalls.iter().any(|stall| stall.overlaps(s)));
        (not.len(), excused.len())
    }

    /// Every failed check, one line each naming the target, the attack and what was expected.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for route in &self.baseline {
            if route.failed > 0 {
                failures.push(format!(
                    "[{}] baseline, {}: {} of {} normal requests failed before any attack \
                     (first: {}); expected all answered",
                    self.name,
                    route.route,
                    route.failed,
                    route.sent(),
                    route.examples.join("; ")
                ));
            }
        }
        for run in &self.attacks {
            failures.extend(self.attack_failures(run));
        }
        failures
    }

    /// The failed checks of one attack's run.
    pub fn attack_failures(&self, run: &AttackRun) -> Vec<String> {
        let mut failures = Vec::new();
        let at = format!("[{}] {}", self.name, run.attack);
        for route in run.routes.iter().filter(|r| r.route != Route::Control) {
            if route.failed > 0 {
                failures.push(format!(
                    "{at}, {}: {} of {} normal requests failed (first: {}); expected every \
                     one answered",
                    route.route,
                    route.failed,
                    route.sent(),
                    route.examples.join("; ")
                ));
            }
            let (slow, _) = self.slow(route, &run.routes);
            if slow > 0 {
                failures.push(format!(
                    "{at}, {}: {slow} of {} normal requests slower than {:.0} ms (worst \
                     {:.0} ms) while the control was not; expected within baseline p99 + \
                     {LATENCY_SLACK_MS:.0} ms",
                    route.route,
                    route.sent(),
                    self.limit_ms(route.route),
                    route.max_ms()
                ));
            }
        }
        if run.memory.total() > MEMORY_BOUND_MIB {
            failures.push(format!(
                "{at}: the proxy's memory peaked at {:.1} MiB (VmRSS {:.1} MiB, with its \
                 sockets' queues {:.1} MiB); expected under {MEMORY_BOUND_MIB:.0} MiB",
                run.memory.total(),
                run.memory.rss,
                run.memory.with_sockets
            ));
        }
        failures.extend(run.outcome.failures.iter().map(|f| format!("{at}: {f}")));
        failures.extend(run.restarts.iter().map(|f| format!("{at}: {f}")));
        if let Some(Err(error)) = &run.reconnect {
            failures.push(format!(
                "{at}: a restarted laptop was not served again ({error}); expected it to \
                 reconnect during the flood"
            ));
        }
        failures
    }
}
