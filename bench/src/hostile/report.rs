//! The suite's markdown report: the bounds, then per proxy the baseline and a table of attacks
//! (normal requests sent and failed, baseline vs worst latency, peak memory, verdict), what
//! each attack saw, and last the failed checks, one line each.

use std::fmt::Write;

use super::checks::{TargetRun, LATENCY_SLACK_MS, MEMORY_BOUND_MIB};
use super::probe::{self, Route, RouteSamples};

/// The whole report for `targets`, given their failed checks.
pub fn markdown(targets: &[TargetRun], failures: &[String]) -> String {
    let mut out = String::from("# cz-bench hostile: cz-proxy against bad clients\n\n");
    let _ = writeln!(
        out,
        "Checks: during every attack each normal request (one client per route, \
         alternately kept-alive and fresh connections) is answered, within its route's \
         baseline p99 + {LATENCY_SLACK_MS:.0} ms (failing after {:?}); the proxy's memory \
         (VmRSS, and VmRSS plus the bytes queued in its sockets) stays under \
         {MEMORY_BOUND_MIB:.0} MiB, half the 128 Mi limit of the pod czctl deploys; the proxy \
         never restarts (same process; in the cluster the same pod with restartCount 0); every \
         bad request reads its answer.\n",
        probe::REQUEST_TIMEOUT
    );
    for target in targets {
        target_section(&mut out, target);
    }
    if failures.is_empty() {
        out.push_str("## Verdict\n\nEvery check passed.\n");
    } else {
        let _ = writeln!(out, "## Failed checks ({})\n", failures.len());
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

fn target_section(out: &mut String, target: &TargetRun) {
    let _ = writeln!(out, "## {} ({})\n", target.name, target.ip);
    let _ = writeln!(
        out,
        "Baseline, no attack (proxy memory peak {:.1} MiB, with sockets {:.1} MiB):\n",
        target.baseline_memory.rss, target.baseline_memory.with_sockets
    );
    out.push_str("| route | requests | failed | median ms | p99 ms | max ms | limit ms |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for route in &target.baseline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            route.route,
            route.sent(),
            route.failed,
            route.quantile_ms(0.5),
            route.quantile_ms(0.99),
            route.max_ms(),
            target.limit_ms(route.route)
        );
    }
    out.push_str(
        "\n| attack | normal requests | failed | slower than limit | excused (machine stall) \
         | worst ms (route; its baseline p99) | control worst ms | RSS MiB before → peak | \
         peak RSS + sockets MiB | verdict |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---|---:|---:|---:|---|\n");
    for run in &target.attacks {
        let (control, proxied): (Vec<&RouteSamples>, Vec<&RouteSamples>) =
            run.routes.iter().partition(|r| r.route == Route::Control);
        let sent: usize = proxied.iter().map(|r| r.sent()).sum();
        let failed: usize = proxied.iter().map(|r| r.failed).sum();
        let (slow, excused) = proxied.iter().fold((0, 0), |(slow, excused), r| {
            let (s, e) = target.slow(r, &run.routes);
            (slow + s, excused + e)
        });
        let worst = proxied
            .iter()
            .max_by(|a, b| {
                (a.max_ms() - target.limit_ms(a.route))
                    .total_cmp(&(b.max_ms() - target.limit_ms(b.route)))
            })
            .map_or_else(String::new, |r| {
                format!(
                    "{:.0} ({}; {:.1})",
                    r.max_ms(),
                    r.route,
                    target.baseline_p99(r.route)
                )
            });
        let control_worst = control.iter().map(|r| r.max_ms()).fold(0.0, f64::max);
        let passed = target.attack_failures(run).is_empty();
        let _ = writeln!(
            out,
            "| {} | {sent} | {failed} | {slow} | {excused} | {worst} | {control_worst:.0} | \
             {:.1} → {:.1} | {:.1} | {} |",
            run.attack,
            run.rss_before,
            run.memory.rss,
            run.memory.with_sockets,
            if passed { "pass" } else { "**FAIL**" }
        );
    }
    out.push_str("\nWhat each attack did and saw:\n\n");
    for run in &target.attacks {
        let _ = writeln!(out, "- {}: {}", run.attack, run.outcome.figures);
        match &run.reconnect {
            Some(Ok(took)) => {
                let _ = writeln!(
                    out,
                    "  - a restarted laptop was served again after {:.2} s",
                    took.as_secs_f64()
                );
            }
            Some(Err(error)) => {
                let _ = writeln!(out, "  - a restarted laptop was not served: {error}");
            }
            None => {}
        }
    }
    if !target.not_attacked.is_empty() {
        out.push_str("\nNot attacked here:\n\n");
        for what in &target.not_attacked {
            let _ = writeln!(out, "- {what}");
        }
    }
    out.push('\n');
}
