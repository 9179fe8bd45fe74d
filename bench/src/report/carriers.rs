//! The carriers table: the intercepted path over each of the tunnel's carriers through the
//! loopback cluster, beside a raw port-forward through the same API server.

use std::fmt::Write;

use super::{num, Figure, Figures, Report};
use crate::paths::PathKind;

impl Report {
    pub(super) fn carrier_table(&self, md: &mut String) {
        use PathKind::*;
        if self.get(1, PortForwardCarrier).is_none() {
            return;
        }
        let _ = writeln!(
            md,
            "## The tunnel's carriers, one worker\n\n\
             cz-proxy as `czctl service intercept` deploys it, in a loopback cluster of its own \
             (`cz-testkit up --sample --network shared`, one per path: API server, kubelet stand-in and \
             pods pinned to CPU 0); czctl with `--tunnel port-forward` or `--tunnel direct`, the app and \
             the load on CPU 1. The raw port-forward is HTTP to the in-cluster echo app through \
             `cz-bench forward` (one port-forward per connection: kube-rs's `Portforwarder`, as a kube-rs \
             program would forward a port, on czctl's client): what the API server's port-forward carries \
             without a tunnel. Cluster CPU counts the whole loopback \
             cluster (its API server relays every port-forward byte, as a real one and its kubelet do). \
             Same rounds and load as above.\n\n\
             | path | HTTP/1.1 req/s | HTTP/2 req/s | p50 µs | p99 µs | cluster CPU µs/req | laptop CPU µs/req | \
             upload MB/s | download MB/s | errors |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for kind in [RawPortForward, PortForwardCarrier, DirectCarrier, CzTunnel] {
            let Some(f) = self.get(1, kind) else { continue };
            let name = if kind == CzTunnel {
                format!("{kind} (no cluster, above)")
            } else {
                kind.to_string()
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(f.h1_rps(), 0),
                num(f.h2_rps(), 0),
                num(f.latency.map(|l| l.p50), 0),
                num(f.latency.map(|l| l.p99), 0),
                num(f.cpu_us_per_request, 1),
                num(f.laptop_cpu_us_per_request, 1),
                num(f.bulk.map(|b| b.upload), 0),
                num(f.bulk.map(|b| b.download), 0),
                f.errors(),
            );
        }
        let _ = writeln!(
            md,
            "\n| figure | port-forward ÷ direct carrier | port-forward carrier ÷ raw port-forward |\n\
             |---|--:|--:|"
        );
        let rows: [(&str, Figure); 6] = [
            ("HTTP/1.1 req/s", Figures::h1_rps),
            ("HTTP/2 req/s", Figures::h2_rps),
            ("p99 latency", |f| f.latency.map(|l| l.p99)),
            ("laptop CPU per request", |f| f.laptop_cpu_us_per_request),
            ("upload MB/s", |f| f.bulk.map(|b| b.upload)),
            ("download MB/s", |f| f.bulk.map(|b| b.download)),
        ];
        for (name, figure) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} |",
                num(self.ratio(1, PortForwardCarrier, DirectCarrier, figure), 2),
                num(self.ratio(1, PortForwardCarrier, RawPortForward, figure), 2),
            );
        }
        md.push('\n');
    }
}
