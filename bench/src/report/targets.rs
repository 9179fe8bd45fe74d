//! The targets section: issue 15's targets, each with its figure from this run and whether it is
//! met (one worker, as the issue measures them).

use std::fmt::Write;

use super::{num, Figure, Figures, Report};
use crate::paths::PathKind::*;

/// HTTP/2 pass-through requests/s ÷ NGINX's when issue 15 was filed: "no worse than today".
const H2_PASSTHROUGH_AT_FILING: f64 = 1.47;

impl Report {
    pub(super) fn targets(&self, md: &mut String) {
        let passthrough = |figure: Figure| self.ratio(1, CzPassthrough, NginxPassthrough, figure);
        let intercepted = |figure: Figure| self.ratio(1, CzTunnel, NginxTunnel, figure);
        let at_most = |value: Option<f64>, bound: f64| value.map(|v| (v, v <= bound));
        let at_least = |value: Option<f64>, bound: f64| value.map(|v| (v, v >= bound));
        let added_p99 = self
            .added(CzPassthrough, |l| l.p99)
            .zip(self.added(NginxPassthrough, |l| l.p99));
        let idle_rss = self.get(1, CzPassthrough).and_then(|f| f.rss_idle);
        let checks = [
            (
                "pass-through HTTP/1.1 CPU/request ≤ 0.8 × NGINX's".to_owned(),
                at_most(passthrough(Figures::cpu), 0.8),
            ),
            (
                "pass-through HTTP/1.1 req/s ≥ 1.25 × NGINX's".to_owned(),
                at_least(passthrough(Figures::h1_rps), 1.25),
            ),
            (
                format!(
                    "pass-through HTTP/2 req/s no worse than at filing ({H2_PASSTHROUGH_AT_FILING} × NGINX's)"
                ),
                at_least(passthrough(Figures::h2_rps), H2_PASSTHROUGH_AT_FILING),
            ),
            (
                "pass-through added p99 ≤ NGINX's (µs, cz-proxy − NGINX)".to_owned(),
                added_p99.map(|(cz, nginx)| (cz - nginx, cz <= nginx)),
            ),
            (
                format!(
                    "RSS with {} idle keep-alive connections ≤ NGINX's",
                    self.mode.idle_connections
                ),
                at_most(passthrough(|f| f.rss_idle_connections), 1.0),
            ),
            (
                "cz-proxy RSS idle < 10 MB (MB)".to_owned(),
                idle_rss.map(|mb| (mb, mb < 10.0)),
            ),
            (
                "laptop CPU/request ≤ 0.6 × rathole client's".to_owned(),
                at_most(intercepted(Figures::laptop_cpu), 0.6),
            ),
            (
                "total CPU per intercepted request (cluster + laptop) ≤ 0.5 × NGINX + rathole's"
                    .to_owned(),
                at_most(intercepted(Figures::total_cpu), 0.5),
            ),
            (
                "intercepted req/s ≥ 1.5 × NGINX + rathole's".to_owned(),
                at_least(intercepted(Figures::h1_rps), 1.5),
            ),
            (
                "intercepted bulk MB/s ≥ 2 × NGINX + rathole's".to_owned(),
                at_least(intercepted(Figures::bulk_mbps), 2.0),
            ),
        ];
        let _ = writeln!(
            md,
            "## Targets (issue 15, one worker; ratios are cz-proxy ÷ other)\n\n\
             | target | figure | met |\n|---|--:|:-:|"
        );
        for (name, check) in checks {
            let (figure, met) = check.map_or(("—".into(), "—"), |(v, met)| {
                (format!("{v:.2}"), if met { "yes" } else { "no" })
            });
            let _ = writeln!(md, "| {name} | {figure} | {met} |");
        }
        let _ = writeln!(
            md,
            "| intercept start-up, `czctl service intercept` → first intercepted response (median s; \
             no target: the floor is the proxy pod's start and first readiness probe, period 1 s) | {} | — |\n",
            num(self.startup_median(), 2)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Throughput;
    use crate::report::Mode;

    fn requests_per_second(rps: f64) -> Figures {
        Figures {
            h1: Some(Throughput {
                rps,
                requests: 1,
                errors: 0,
            }),
            ..Figures::default()
        }
    }

    #[test]
    fn each_target_is_judged_against_its_own_bound_and_unmeasured_ones_are_dashes() {
        let mut report = Report::new(Mode::quick(), Vec::new());
        report.add(1, NginxPassthrough, requests_per_second(1000.0));
        report.add(1, CzPassthrough, requests_per_second(1300.0));
        report.add(1, NginxTunnel, requests_per_second(1000.0));
        report.add(1, CzTunnel, requests_per_second(1400.0));
        let mut md = String::new();
        report.targets(&mut md);
        assert!(
            md.contains("| pass-through HTTP/1.1 req/s ≥ 1.25 × NGINX's | 1.30 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| intercepted req/s ≥ 1.5 × NGINX + rathole's | 1.40 | no |"),
            "{md}"
        );
        assert!(
            md.contains("| laptop CPU/request ≤ 0.6 × rathole client's | — | — |"),
            "{md}"
        );
    }
}
