//! System calls per request: a process tree's system calls counted by `perf stat` on the
//! `raw_syscalls:sys_enter` tracepoint while a load runs. Counting costs the processes a
//! tracepoint hit per call, so the suite counts in runs of their own, never while it times CPU.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::tools::locate;

/// The tracepoint every system call passes on its way in.
const EVENT: &str = "raw_syscalls:sys_enter";

/// Counts system calls with perf.
pub struct SyscallCounter {
    perf: PathBuf,
}

impl SyscallCounter {
    /// perf on PATH, if it is there (the suite's figures do without it).
    pub fn find() -> Option<Self> {
        locate("perf").map(|perf| Self { perf })
    }

    /// Starts counting the system calls of every thread of `pids` for `window`, writing perf's
    /// report into `dir`.
    pub fn start(&self, pids: &[u32], window: Duration, dir: &Path) -> anyhow::Result<Counting> {
        let Some((first, rest)) = pids.split_first() else {
            bail!("no process to count the system calls of");
        };
        let list = rest
            .iter()
            .fold(first.to_string(), |list, pid| format!("{list},{pid}"));
        let output = dir.join(format!("syscalls-{first}.csv"));
        let child = Command::new(&self.perf)
            .args(["stat", "-x,", "-e", EVENT, "-p", &list, "-o"])
            .arg(&output)
            .args(["--", "sleep", &format!("{:.3}", window.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf stat")?;
        Ok(Counting { child, output })
    }
}

/// A count in progress.
pub struct Counting {
    child: Child,
    output: PathBuf,
}

impl Counting {
    /// Waits for the window to end; returns the system calls counted.
    pub fn finish(self) -> anyhow::Result<u64> {
        let result = self.child.wait_with_output()?;
        if !result.status.success() {
            bail!(
                "perf stat failed: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        let report = std::fs::read_to_string(&self.output)
            .with_context(|| format!("reading {}", self.output.display()))?;
        parse(&report).with_context(|| format!("perf stat counted no system calls:\n{report}"))
    }
}

/// The count of perf stat's CSV report (`COUNT,UNIT,EVENT,…`; `<not counted>` where the
/// tracepoint was unavailable).
fn parse(report: &str) -> Option<u64> {
    let line = report.lines().find(|line| line.contains(EVENT))?;
    line.split(',').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_the_event_line_and_an_uncounted_event_is_none() {
        let report = "# started on Sat Dec  5 03:50:01 2026\n\n\
                      1389625,,raw_syscalls:sys_enter,5003423456,100.00,,\n";
        assert_eq!(parse(report), Some(1_389_625));
        let uncounted = "<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n";
        assert_eq!(parse(uncounted), None);
        assert_eq!(parse("# started on Sat Dec  5 03:50:01 2026\n"), None);
    }
}
