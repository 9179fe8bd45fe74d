//! The text of a profile (`LABEL-SIDE.txt`) and the titles of its flame graph: what ran, CPU
//! time and instructions per request, and the costliest functions and crates.

use std::fmt::Write;
use std::time::Duration;

use super::callgrind::Dump;
use super::stacks::{by_origin, Costs, Folded};
use super::Side;
use crate::load::Latency;

/// Functions listed per ranking.
const TOP: usize = 25;
/// Longer function names are cut (Rust's generic names run to hundreds of characters).
const NAME_WIDTH: usize = 150;

/// What the timed runs measured.
pub struct Timing {
    /// The fixed request rate.
    pub rate: u32,
    /// The length of the CPU time window and of the perf recording.
    pub window: Duration,
    /// Requests served in the CPU time window.
    pub requests: u64,
    /// CPU time of the profiled process in that window.
    pub cpu: Duration,
    /// Latency of those requests, end to end.
    pub latency: Latency,
    /// The perf recording's samples.
    pub samples: Folded,
}

/// What callgrind counted.
pub struct Instructions {
    /// Requests counted.
    pub requests: u64,
    /// Requests sent before the counters were zeroed.
    pub warm_up: u64,
    /// The counters.
    pub dump: Dump,
}

impl Instructions {
    fn per_request(&self, instructions: u64) -> u64 {
        instructions / self.requests.max(1)
    }
}

/// A whole profile.
pub struct Summary<'a> {
    /// The profiled side.
    pub side: Side,
    /// The label of the output files.
    pub label: &'a str,
    /// The timed runs.
    pub timing: Timing,
    /// The counted run.
    pub instructions: Instructions,
}

impl Summary<'_> {
    fn process(&self) -> &'static str {
        match self.side {
            Side::Passthrough => "cz-proxy",
            Side::Laptop => "czctl",
        }
    }

    /// The flame graph's title.
    pub fn title(&self) -> String {
        let path = match self.side {
            Side::Passthrough => "pass-through",
            Side::Laptop => "intercepted, laptop side",
        };
        format!("{path}: CPU time of {} ({})", self.process(), self.label)
    }

    /// The flame graph's subtitle: the load and the figures per request.
    pub fn subtitle(&self) -> String {
        let t = &self.timing;
        format!(
            "HTTP/1.1 at {} req/s; cpu-clock samples over {} s (perf, DWARF call graphs); \
             {:.1} µs CPU and {} instructions per request",
            thousands(t.rate.into()),
            t.window.as_secs(),
            self.cpu_per_request(),
            thousands(self.instructions_per_request()),
        )
    }

    /// How closely runs of one binary agree on the instructions per request (measured).
    fn repeatability(&self) -> &'static str {
        match self.side {
            Side::Passthrough => "runs of one binary agree within 0.02%",
            Side::Laptop => {
                "runs of one binary agree within ±0.4%: QUIC's acknowledgements and timers \
                 depend on timing"
            }
        }
    }

    fn cpu_per_request(&self) -> f64 {
        self.timing.cpu.as_secs_f64() * 1e6 / self.timing.requests.max(1) as f64
    }

    fn instructions_per_request(&self) -> u64 {
        let i = &self.instructions;
        i.per_request(i.dump.instructions())
    }

    /// The text file.
    pub fn text(&self) -> String {
        let (t, i) = (&self.timing, &self.instructions);
        let what = match self.side {
            Side::Passthrough => {
                "cz-proxy (one worker thread, CPU 0) passing HTTP/1.1 GETs without the intercept \
                 header to cz-bench's app (CPU 1)"
            }
            Side::Laptop => {
                "czctl (CPU 1) serving HTTP/1.1 GETs with the intercept header, sent to cz-proxy \
                 (one worker thread, CPU 0) and through the QUIC tunnel, from cz-bench's app (CPU 1)"
            }
        };
        let mut text = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(text, "{label:<22}{value}");
        };
        line(
            "command",
            format!(
                "cz-bench profile {} --rate {} --seconds {} --counted {} --label {}",
                self.side.name(),
                t.rate,
                t.window.as_secs(),
                i.requests,
                self.label
            ),
        );
        line("path", what.to_owned());
        line("profiled process", self.process().to_owned());
        line(
            "load",
            format!(
                "{} req/s over 32 keep-alive connections (cz-bench's own client)",
                thousands(t.rate.into())
            ),
        );
        line(
            "requests",
            format!(
                "{} in a {} s window",
                thousands(t.requests),
                t.window.as_secs()
            ),
        );
        line(
            "CPU per request",
            format!(
                "{:.1} µs (run time of every thread over the window, /proc/PID/task/*/schedstat; \
                 a timing: noisy on a shared machine)",
                self.cpu_per_request()
            ),
        );
        line(
            "latency p50 / p99",
            format!(
                "{:.0} / {:.0} µs (the whole path, as the client saw it)",
                t.latency.p50, t.latency.p99
            ),
        );
        line(
            "instructions/request",
            format!(
                "{} (callgrind: {} instructions over {} requests, one at a time on one \
                 keep-alive connection, after {} warm-up requests; {})",
                thousands(self.instructions_per_request()),
                thousands(i.dump.instructions()),
                thousands(i.requests),
                i.warm_up,
                self.repeatability()
            ),
        );
        line(
            "flame graph",
            format!(
                "{} ms of CPU in cpu-clock samples over {} s at the same rate (perf record \
                 -e cpu-clock --call-graph dwarf,32768); the figures below in µs per request \
                 are shares of the CPU per request above",
                t.samples.self_samples.total / 1_000_000,
                t.window.as_secs()
            ),
        );
        let own = &i.dump.self_instructions;
        let per_request = |cost| thousands(i.per_request(cost));
        ranking(
            &mut text,
            "Instructions by origin (callgrind; each function's own instructions)",
            "instr/req",
            &by_origin(own),
            TOP,
            per_request,
        );
        ranking(
            &mut text,
            &format!("Top {TOP} functions by own instructions (callgrind)"),
            "instr/req",
            own,
            TOP,
            per_request,
        );
        let samples = &t.samples;
        let cpu_per_request = self.cpu_per_request();
        let micros = |ns: u64| {
            let share = ns as f64 / samples.self_samples.total.max(1) as f64;
            format!("{:.2}", share * cpu_per_request)
        };
        ranking(
            &mut text,
            "Time by origin (perf; self time)",
            "µs/req",
            &by_origin(&samples.self_samples),
            TOP,
            micros,
        );
        ranking(
            &mut text,
            &format!("Top {TOP} functions by self time (perf)"),
            "µs/req",
            &samples.self_samples,
            TOP,
            micros,
        );
        ranking(
            &mut text,
            &format!("Top {TOP} functions by inclusive time (perf; the function and its callees)"),
            "µs/req",
            &samples.inclusive_samples,
            TOP,
            micros,
        );
        text
    }
}

/// Appends the `n` costliest entries of `costs`: share, the cost shown by `show`, name.
fn ranking(
    text: &mut String,
    title: &str,
    unit: &str,
    costs: &Costs,
    n: usize,
    show: impl Fn(u64) -> String,
) {
    let _ = writeln!(text, "\n{title}:\n  share  {unit:>10}  name");
    for (name, cost) in costs.top(n) {
        let name = match name.char_indices().nth(NAME_WIDTH) {
            Some((cut, _)) => format!("{}…", &name[..cut]),
            None => name.to_owned(),
        };
        let _ = writeln!(
            text,
            "{:>6.1}%  {:>10}  {name}",
            costs.share(cost),
            show(cost)
        );
    }
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(40_312_000), "40,312,000");
    }

    #[test]
    fn a_ranking_lists_the_costliest_first_with_long_names_cut() {
        let long = "x".repeat(NAME_WIDTH + 10);
        let costs = Costs {
            by_function: [("small".to_owned(), 1), (long, 3)].into(),
            total: 4,
        };
        let mut text = String::new();
        ranking(&mut text, "T", "samples", &costs, 5, thousands);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "T:");
        assert!(lines[3].starts_with("  75.0%           3  xxx"));
        assert!(lines[3].ends_with('…'));
        assert_eq!(lines[3].chars().count(), 21 + NAME_WIDTH + 1);
        assert_eq!(lines[4], "  25.0%           1  small");
    }
}
