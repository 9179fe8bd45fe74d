//! Where each side's CPU goes, one worker: its own code or the kernel, and how many system calls
//! it makes per request. The pass-through target's floor is read from it: NGINX's kernel time
//! alone, which a proxy making the same system calls cannot go below.

use std::fmt::Write;

use super::{num, Report};
use crate::paths::PathKind;
use crate::procs::CpuTime;
use crate::stats::median;

/// CPU time per request, µs, split by where it was spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    /// In the program's own code.
    pub user: f64,
    /// In the kernel on its behalf.
    pub kernel: f64,
}

impl CpuSplit {
    /// `cpu` spread over `requests`.
    pub fn per_request(cpu: CpuTime, requests: u64) -> Self {
        let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
        Self {
            user: per_request(cpu.user),
            kernel: per_request(cpu.system),
        }
    }

    /// Both parts together.
    pub fn total(self) -> f64 {
        self.user + self.kernel
    }

    /// The median of each part over `rounds`.
    pub fn median(rounds: impl Iterator<Item = Self> + Clone) -> Self {
        Self {
            user: median(rounds.clone().map(|r| r.user).collect()),
            kernel: median(rounds.map(|r| r.kernel).collect()),
        }
    }
}

impl Report {
    pub(super) fn cost_table(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## Where the CPU goes, one worker\n\n\
             The HTTP/1.1 runs above, their CPU per request split into user time (the program's own \
             code) and system time (the kernel on its behalf: system calls, and the loopback network \
             stack's work they set off); system calls per request counted by `perf stat -e \
             raw_syscalls:sys_enter` in a run of their own (the load generator's and the app's not \
             counted).\n\n\
             | path | user µs/req | kernel µs/req | system calls/req | laptop user µs/req | \
             laptop kernel µs/req | laptop system calls/req |\n|---|--:|--:|--:|--:|--:|--:|"
        );
        let part = |split: Option<CpuSplit>, part: fn(CpuSplit) -> f64| num(split.map(part), 1);
        for kind in PathKind::ALL {
            let Some(f) = self.get(1, kind).filter(|f| f.cpu_split.is_some()) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {kind} | {} | {} | {} | {} | {} | {} |",
                part(f.cpu_split, |s| s.user),
                part(f.cpu_split, |s| s.kernel),
                num(f.syscalls_per_request, 2),
                part(f.laptop_cpu_split, |s| s.user),
                part(f.laptop_cpu_split, |s| s.kernel),
                num(f.laptop_syscalls_per_request, 2),
            );
        }
        if let Some(floor) = self.passthrough_floor() {
            let _ = writeln!(
                md,
                "\nNGINX pass-through's kernel time alone is {floor:.2} × its CPU per request: \
                 below that ratio, cz-proxy would have to cost the kernel less per request than \
                 NGINX does."
            );
        }
        md.push('\n');
    }

    /// NGINX pass-through's kernel CPU per request ÷ its whole CPU per request.
    fn passthrough_floor(&self) -> Option<f64> {
        let split = self.get(1, PathKind::NginxPassthrough)?.cpu_split?;
        Some(split.kernel / split.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::PathKind::*;
    use crate::report::{Figures, Mode};

    #[test]
    fn each_side_is_split_and_the_floor_is_nginx_kernel_share() {
        let mut report = Report::new(Mode::quick(), Vec::new());
        let split = |user, kernel| Some(CpuSplit { user, kernel });
        report.add(
            1,
            NginxPassthrough,
            Figures {
                cpu_split: split(3.0, 12.0),
                syscalls_per_request: Some(5.04),
                ..Figures::default()
            },
        );
        report.add(
            1,
            CzTunnel,
            Figures {
                cpu_split: split(4.5, 8.0),
                laptop_cpu_split: split(6.0, 5.5),
                laptop_syscalls_per_request: Some(2.5),
                ..Figures::default()
            },
        );
        let mut md = String::new();
        report.cost_table(&mut md);
        assert!(
            md.contains("| NGINX pass-through | 3.0 | 12.0 | 5.04 | — | — | — |"),
            "{md}"
        );
        assert!(
            md.contains("| cz-proxy + QUIC intercepted | 4.5 | 8.0 | — | 6.0 | 5.5 | 2.50 |"),
            "{md}"
        );
        assert!(md.contains("kernel time alone is 0.80 ×"), "{md}");
    }
}
