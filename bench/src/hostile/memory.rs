//! The proxy's memory during an attack: its resident memory (VmRSS), and the bytes queued in
//! its sockets' buffers, which VmRSS does not show but a pod's memory limit counts.

use std::process::Command;
use std::time::Duration;

use crate::procs::{rss_mb, PeakSampler};

/// How often the sockets are listed (`ss` walks every process's file descriptors).
const SOCKETS_EVERY: Duration = Duration::from_millis(500);

/// Peaks of the proxy's memory over an attack, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPeaks {
    /// VmRSS, sampled every 50 ms.
    pub rss: f64,
    /// VmRSS plus the bytes in its sockets' receive and send queues, sampled together.
    pub with_sockets: f64,
}

impl MemoryPeaks {
    /// The larger figure of both, which the bound applies to.
    pub fn total(&self) -> f64 {
        self.rss.max(self.with_sockets)
    }
}

/// Samples a process's memory until stopped.
pub struct MemorySampler {
    rss: PeakSampler,
    with_sockets: PeakSampler,
}

impl MemorySampler {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Self {
        Self {
            rss: PeakSampler::rss(vec![pid]),
            with_sockets: PeakSampler::start(SOCKETS_EVERY, move || {
                rss_mb(&[pid]) + socket_bytes(pid) as f64 / (1024.0 * 1024.0)
            }),
        }
    }

    /// The peaks seen.
    pub fn stop(self) -> MemoryPeaks {
        MemoryPeaks {
            rss: self.rss.stop(),
            with_sockets: self.with_sockets.stop(),
        }
    }
}

/// Bytes held in the receive and send queues of process `pid`'s TCP and UDP sockets, from
/// `ss -tuanpm` (`skmem:(r…,…,w…)`: rmem_alloc and wmem_queued); 0 if `ss` fails.
pub fn socket_bytes(pid: u32) -> u64 {
    let Ok(output) = Command::new("ss").args(["-tuanpmH"]).output() else {
        return 0;
    };
    let owner = format!("pid={pid},");
    let text = String::from_utf8_lossy(&output.stdout);
    // One socket per record: its line, and its skmem on the same or the next line.
    let mut total = 0;
    let mut owned = false;
    for line in text.lines() {
        if line.starts_with("tcp") || line.starts_with("udp") {
            owned = line.contains(&owner);
        }
        if owned {
            total += skmem(line);
        }
    }
    total
}

/// `r` + `w` of the `skmem:(…)` in `line`, if any.
fn skmem(line: &str) -> u64 {
    let Some(start) = line.find("skmem:(") else {
        return 0;
    };
    let fields = &line[start + "skmem:(".len()..];
    let fields = &fields[..fields.find(')').unwrap_or(fields.len())];
    fields
        .split(',')
        .filter_map(|field| {
            let digits = field.find(|c: char| c.is_ascii_digit())?;
            matches!(&field[..digits], "r" | "w")
                .then(|| field[digits..].parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skmem_sums_the_receive_and_send_queues_only() {
        let line = "\tskmem:(r1024,rb131072,t0,tb2626560,f4096,w2048,o0,bl0,d0)";
        assert_eq!(skmem(line), 3072);
        assert_eq!(skmem("tcp ESTAB 0 0 127.0.0.1:1 127.0.0.1:2"), 0);
    }
}
