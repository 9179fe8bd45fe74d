//! The start-up section: how long `czctl service intercept` takes on the loopback cluster until
//! the first intercepted response, until it announces the intercept, and to stop.

use std::fmt::Write;

use super::{num, Report};
use crate::startup::spread;

impl Report {
    /// The median start-up time to the first intercepted response, s.
    pub(super) fn startup_median(&self) -> Option<f64> {
        let times = self.startup.as_ref()?;
        spread(&times.first_response).map(|(median, _, _)| median)
    }

    pub(super) fn startup_table(&self, md: &mut String) {
        let Some(times) = &self.startup else { return };
        let _ = writeln!(
            md,
            "## Intercept start-up, loopback cluster\n\n\
             `czctl service intercept echo` (default `--tunnel auto`) against a loopback cluster of \
             its own (`cz-testkit up --sample --network shared`, pinned to CPU 0; czctl and the app on \
             CPU 1), {} runs, each stopped with SIGTERM (as Ctrl-C) and the next started only once \
             the Service is restored and the proxy pod gone. First intercepted response: every 5 ms \
             a request with the intercept header on a new connection to the Service's ClusterIP, \
             until the laptop's app answers it. czctl prints `Intercepting` only once Services have \
             had 2 s (kube-proxy's lag on real clusters) to follow the switch; this cluster's \
             Services follow at once, so the first response comes earlier.\n\n\
             | from | to | median s | min s | max s |\n|---|---|--:|--:|--:|",
            times.runs()
        );
        let rows = [
            (
                "starting czctl",
                "the first intercepted response",
                &times.first_response,
            ),
            (
                "starting czctl",
                "its `Intercepting` line",
                &times.announced,
            ),
            (
                "SIGTERM",
                "czctl exited, Service restored, proxy pod gone",
                &times.stopped,
            ),
        ];
        for (from, to, samples) in rows {
            let spread = spread(samples);
            let _ = writeln!(
                md,
                "| {from} | {to} | {} | {} | {} |",
                num(spread.map(|s| s.0), 2),
                num(spread.map(|s| s.1), 2),
                num(spread.map(|s| s.2), 2),
            );
        }
        md.push('\n');
    }
}
