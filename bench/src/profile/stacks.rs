//! Where the samples of a profile fell: self and inclusive counts per function, from folded
//! stacks (`root;caller;…;leaf COUNT`, one line per distinct stack, as inferno writes them) or
//! from any other per-function costs.

use std::collections::{HashMap, HashSet};

/// Costs per function (samples or instructions), with their total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Costs {
    /// Cost of every function.
    pub by_function: HashMap<String, u64>,
    /// The cost of the whole profile, for shares.
    pub total: u64,
}

impl Costs {
    /// The `n` costliest functions, costliest first (ties by name, so the order is stable).
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self
            .by_function
            .iter()
            .map(|(name, &cost)| (name.as_str(), cost))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// `cost` as a percentage of the total.
    pub fn share(&self, cost: u64) -> f64 {
        cost as f64 * 100.0 / self.total.max(1) as f64
    }
}

/// Self and inclusive samples per function of a folded profile.
#[derive(Debug, Default)]
pub struct Folded {
    /// Samples whose innermost frame is the function.
    pub self_samples: Costs,
    /// Samples with the function anywhere on the stack (counted once per stack, so recursion
    /// does not count twice). The root frame (the thread's name) is left out: it holds every
    /// sample.
    pub inclusive_samples: Costs,
}

impl Folded {
    /// Reads folded stacks; lines that do not end in a count are skipped.
    pub fn parse(folded: &str) -> Self {
        let mut profile = Self::default();
        for line in folded.lines() {
            let Some((stack, count)) = line.trim_end().rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            let frames: Vec<&str> = stack.split(';').collect();
            let Some(leaf) = frames.last() else {
                continue;
            };
            *profile
                .self_samples
                .by_function
                .entry((*leaf).to_owned())
                .or_default() += count;
            profile.self_samples.total += count;
            profile.inclusive_samples.total += count;
            let distinct: HashSet<&str> = frames.iter().skip(1).copied().collect();
            for frame in distinct {
                *profile
                    .inclusive_samples
                    .by_function
                    .entry(frame.to_owned())
                    .or_default() += count;
            }
        }
        profile
    }
}

/// Where a function's code comes from: `kernel` (frames inferno marks `_[k]`), the Rust crate
/// its path starts with, or `C` (libc's memcpy, the allocator, …).
pub fn origin(function: &str) -> &str {
    if function.ends_with("_[k]") {
        return "kernel";
    }
    let path = function.trim_start_matches('<');
    match path.split_once("::") {
        Some((krate, _)) if !krate.contains([' ', '(']) => krate,
        _ => "C",
    }
}

/// `costs` summed by [`origin`].
pub fn by_origin(costs: &Costs) -> Costs {
    let mut grouped = Costs {
        total: costs.total,
        ..Costs::default()
    };
    for (function, &cost) in &costs.by_function {
        *grouped
            .by_function
            .entry(origin(function).to_owned())
            .or_default() += cost;
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLDED: &str = "\
tokio-runtime-w;main;tokio::run;hyper::proto::parse 5
tokio-runtime-w;main;tokio::run;memcpy 3
tokio-runtime-w;main;f;f;g 2
tokio-runtime-w;main;tokio::run;do_syscall_64_[k];tcp_sendmsg_[k] 10
not a folded line
";

    #[test]
    fn self_samples_are_counted_on_the_innermost_frame() {
        let profile = Folded::parse(FOLDED);
        let top = profile.self_samples.top(2);
        assert_eq!(top, [("tcp_sendmsg_[k]", 10), ("hyper::proto::parse", 5)]);
        assert_eq!(profile.self_samples.total, 20);
        assert_eq!(profile.self_samples.share(5), 25.0);
    }

    #[test]
    fn inclusive_samples_count_a_recursive_function_once_and_skip_the_root() {
        let profile = Folded::parse(FOLDED);
        let inclusive = &profile.inclusive_samples.by_function;
        assert_eq!(inclusive["main"], 20);
        assert_eq!(inclusive["tokio::run"], 18);
        assert_eq!(inclusive["f"], 2);
        assert!(!inclusive.contains_key("tokio-runtime-w"));
    }

    #[test]
    fn origins_are_the_kernel_a_crate_or_c() {
        assert_eq!(origin("tcp_sendmsg_[k]"), "kernel");
        assert_eq!(origin("hyper::proto::h1::role::parse_headers"), "hyper");
        assert_eq!(
            origin("<hyper_util::client::legacy::Client<C,B> as tower::Service>::call"),
            "hyper_util"
        );
        assert_eq!(origin("__memmove_avx_unaligned_erms"), "C");
        assert_eq!(origin("0x0000000000002370"), "C");
    }

    #[test]
    fn grouping_by_origin_keeps_the_total() {
        let grouped = by_origin(&Folded::parse(FOLDED).self_samples);
        // memcpy and g are C; ties go by name.
        assert_eq!(grouped.top(3), [("kernel", 10), ("C", 5), ("hyper", 5)]);
        assert_eq!(grouped.total, 20);
    }
}
