//! The `ratios:` line closing the report: the issue's headline ratios, ours ÷ theirs, from the
//! one-worker setting, with fixed keys in a fixed order so that runs can be compared by eye or
//! by script.

use super::{num, Figure, Figures, Report};
use crate::paths::PathKind::{self, *};

/// The keys of the `ratios:` line in their order, each with the path it measures (ours), the one
/// it is divided by (theirs) and the figure. For CPU and memory, lower is better.
const RATIOS: [(&str, PathKind, PathKind, Figure); 9] = [
    (
        "passthrough_rps_vs_nginx",
        CzPassthrough,
        NginxPassthrough,
        Figures::h1_rps,
    ),
    (
        "passthrough_cpu_per_req_vs_nginx",
        CzPassthrough,
        NginxPassthrough,
        Figures::cpu,
    ),
    (
        "idle_conn_rss_vs_nginx",
        CzPassthrough,
        NginxPassthrough,
        |f| f.rss_idle_connections,
    ),
    (
        "intercept_rps_vs_nginx_tunnel",
        CzTunnel,
        NginxTunnel,
        Figures::h1_rps,
    ),
    (
        "intercept_total_cpu_vs_nginx_tunnel",
        CzTunnel,
        NginxTunnel,
        Figures::total_cpu,
    ),
    (
        "laptop_cpu_vs_rathole_client",
        CzTunnel,
        NginxTunnel,
        Figures::laptop_cpu,
    ),
    (
        "intercept_bulk_vs_nginx_tunnel",
        CzTunnel,
        NginxTunnel,
        Figures::bulk_mbps,
    ),
    (
        "port_forward_rps_vs_direct",
        PortForwardCarrier,
        DirectCarrier,
        Figures::h1_rps,
    ),
    (
        "port_forward_bulk_vs_raw",
        PortForwardCarrier,
        RawPortForward,
        Figures::bulk_mbps,
    ),
];

impl Report {
    /// The report's last line: `ratios: key=X.XX …`, `—` where a figure is missing.
    pub fn ratios_line(&self) -> String {
        let mut line = String::from("ratios:");
        for (key, ours, theirs, figure) in RATIOS {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(&num(self.ratio(1, ours, theirs, figure), 2));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Bulk, Throughput};
    use crate::report::Mode;

    /// Figures whose every ratio between two paths is `scale` (ours) ÷ 1 (theirs).
    fn figures(scale: f64) -> Figures {
        Figures {
            h1: Some(Throughput {
                rps: 1000.0 * scale,
                requests: 1,
                errors: 0,
            }),
            cpu_us_per_request: Some(10.0 * scale),
            laptop_cpu_us_per_request: Some(20.0 * scale),
            total_cpu_us_per_request: Some(30.0 * scale),
            rss_idle_connections: Some(40.0 * scale),
            bulk: Some(Bulk {
                upload: 100.0 * scale,
                download: 300.0 * scale,
            }),
            ..Figures::default()
        }
    }

    #[test]
    fn the_line_has_the_issues_keys_in_order_with_each_ratio_ours_over_theirs() {
        let mut report = Report::new(Mode::quick(), Vec::new());
        for (kind, scale) in [
            (NginxPassthrough, 1.0),
            (CzPassthrough, 0.8),
            (NginxTunnel, 1.0),
            (CzTunnel, 0.5),
            (DirectCarrier, 1.0),
            (RawPortForward, 2.0),
            (PortForwardCarrier, 1.5),
        ] {
            report.add(1, kind, figures(scale));
        }
        // The two-worker setting never counts.
        report.add(2, CzPassthrough, figures(9.0));
        assert_eq!(
            report.ratios_line(),
            "ratios: passthrough_rps_vs_nginx=0.80 passthrough_cpu_per_req_vs_nginx=0.80 \
             idle_conn_rss_vs_nginx=0.80 intercept_rps_vs_nginx_tunnel=0.50 \
             intercept_total_cpu_vs_nginx_tunnel=0.50 laptop_cpu_vs_rathole_client=0.50 \
             intercept_bulk_vs_nginx_tunnel=0.50 port_forward_rps_vs_direct=1.50 \
             port_forward_bulk_vs_raw=0.75"
        );
    }

    #[test]
    fn a_missing_figure_is_a_dash_and_keeps_its_place() {
        let mut report = Report::new(Mode::quick(), Vec::new());
        report.add(1, NginxTunnel, figures(1.0));
        report.add(
            1,
            CzTunnel,
            Figures {
                total_cpu_us_per_request: None,
                ..figures(0.25)
            },
        );
        let line = report.ratios_line();
        assert!(
            line.contains(
                " intercept_rps_vs_nginx_tunnel=0.25 intercept_total_cpu_vs_nginx_tunnel=— \
                 laptop_cpu_vs_rathole_client=0.25 "
            ),
            "{line}"
        );
        assert!(
            line.starts_with("ratios: passthrough_rps_vs_nginx=— "),
            "{line}"
        );
    }
}
