//! Gives the memory a burst freed back to the system. glibc's malloc keeps what the proxy frees
//! inside its heap, where it still counts as the pod's resident memory until it is used again:
//! hyper's buffers and HTTP/2 state of a burst of connections, long after the burst (7 MB after
//! a few seconds of h2load, on a 7.9 MB proxy). So once the proxy goes quiet after having been
//! busy — it used less than [`QUIET_CPU`] of a [`CHECK_EVERY`] period — and the heap holds at
//! least [`RELEASE_ABOVE`] free, `malloc_trim` hands the free pages back; a page used again
//! faults back in. Under load it never runs, and an idle proxy releases once.

use std::time::Duration;

use tracing::debug;

/// How often the proxy's activity and heap are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// CPU time within one [`CHECK_EVERY`] below which the proxy is quiet: 1 %.
pub const QUIET_CPU: Duration = Duration::from_millis(50);

/// Free heap bytes worth a release.
pub const RELEASE_ABOVE: usize = 1 << 20;

/// Releases freed memory after bursts, for as long as the proxy runs.
pub async fn release_after_bursts() {
    let mut releases = Releases::default();
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let Some(cpu) = heap::cpu_time() else {
            return debug!("no CPU time to tell bursts by; freed memory stays in the heap");
        };
        if releases.due(cpu, heap::free_bytes()) {
            let released = heap::release();
            debug!(
                released,
                "the proxy went quiet; gave the heap's free pages back"
            );
        }
    }
}

/// When to release, from the proxy's CPU time and the heap's free bytes at each check.
#[derive(Debug, Default)]
struct Releases {
    /// The proxy's CPU time at the last check.
    cpu: Option<Duration>,
    /// Whether the proxy was busy since the last release.
    busy: bool,
}

impl Releases {
    /// Whether to release now, the proxy having used `cpu` so far and the heap holding `free`
    /// bytes unused.
    fn due(&mut self, cpu: Duration, free: usize) -> bool {
        let used = cpu.saturating_sub(self.cpu.replace(cpu).unwrap_or(cpu));
        if used >= QUIET_CPU {
            self.busy = true;
            return false;
        }
        if self.busy && free >= RELEASE_ABOVE {
            self.busy = false;
            return true;
        }
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod heap {
    /// Bytes malloc holds free, in every arena.
    pub fn free_bytes() -> usize {
        // SAFETY: mallinfo2 only reads malloc's own bookkeeping, under its locks.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Returns the free pages of every arena to the system; whether any was returned.
    pub fn release() -> bool {
        // SAFETY: malloc_trim only releases pages malloc holds free, under its locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }

    /// CPU time the process has used so far, all threads (`/proc/self/stat`, in clock ticks of
    /// 10 ms: coarse, and enough to tell a quiet proxy from a busy one).
    pub fn cpu_time() -> Option<std::time::Duration> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // utime and stime: fields 14 and 15, 12 and 13 after the parenthesised name.
        let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ').skip(11);
        let mut ticks = || fields.next()?.parse::<u64>().ok();
        Some(std::time::Duration::from_millis((ticks()? + ticks()?) * 10))
    }
}

/// Other allocators release their free memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub fn free_bytes() -> usize {
        0
    }

    pub fn release() -> bool {
        false
    }

    pub fn cpu_time() -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    #[test]
    fn releases_once_the_proxy_goes_quiet_after_a_burst_and_never_under_load() {
        let mut releases = Releases::default();
        let mut cpu = Duration::ZERO;
        let mut check = |used: Duration, free: usize| {
            cpu += used;
            releases.due(cpu, free)
        };
        let busy = Duration::from_millis(800);
        assert!(
            !check(Duration::ZERO, 10 * MB),
            "quiet since start: nothing to release"
        );
        // Under load, however much is free.
        for _ in 0..3 {
            assert!(!check(busy, 10 * MB));
        }
        // The burst is over: one release, then none while the proxy stays quiet.
        assert!(check(Duration::from_millis(20), 10 * MB));
        assert!(!check(Duration::ZERO, 10 * MB));
        assert!(!check(Duration::from_millis(10), 10 * MB));
        // Another burst that left less than the threshold free: not worth a release...
        assert!(!check(busy, MB / 2));
        assert!(!check(Duration::ZERO, MB / 2));
        // ...until a later quiet check finds enough.
        assert!(check(Duration::ZERO, 2 * MB));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_is_counted_and_released() {
        // Freed blocks below malloc's mmap threshold stay in the heap.
        let blocks: Vec<Vec<u8>> = (0..64)
            .map(|_| std::hint::black_box(vec![1u8; 64 * 1024]))
            .collect();
        // The last one keeps the heap's top in use, so only a trim can release the others.
        let top = std::hint::black_box(vec![1u8; 64 * 1024]);
        let before = heap::free_bytes();
        drop(blocks);
        let freed = heap::free_bytes();
        assert!(freed >= before + 2 * MB, "{before} → {freed}");
        assert!(heap::release(), "nothing released");
        assert!(heap::cpu_time().is_some(), "no CPU time in /proc/self/stat");
        drop(top);
    }
}
