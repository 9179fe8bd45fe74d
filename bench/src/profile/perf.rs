//! Where a process spends its CPU time: `perf record -e cpu-clock --call-graph dwarf` of the
//! process for a while (hardware counters do not work on these machines; the cpu-clock software
//! event does), its stacks folded by inferno, and a flame graph of them.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as GraphOptions};

use crate::tools::locate;

/// The call graph: DWARF unwinding of 32 KiB of stack per sample. perf's default of 8 KiB
/// stops most of cz-proxy's stacks inside hyper's connection future, short of the runtime.
const CALL_GRAPH: &str = "dwarf,32768";

/// The perf program, found on PATH.
pub struct Perf {
    program: PathBuf,
}

impl Perf {
    /// Finds perf, or says which package brings it.
    pub fn find() -> anyhow::Result<Self> {
        let program = locate("perf").context("perf is missing: apt-get install linux-perf")?;
        Ok(Self { program })
    }

    /// Starts sampling process `pid` (all its threads) for `duration`, into `data`.
    pub fn record(&self, pid: u32, duration: Duration, data: &Path) -> anyhow::Result<Recording> {
        let child = Command::new(&self.program)
            .args([
                "record",
                "--quiet",
                "-e",
                "cpu-clock",
                "--call-graph",
                CALL_GRAPH,
            ])
            .arg(format!("-p{pid}"))
            .arg("-o")
            .arg(data)
            .args(["--", "sleep"])
            .arg(format!("{:.3}", duration.as_secs_f64()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record")?;
        Ok(Recording {
            child,
            data: data.to_owned(),
        })
    }

    /// The samples of `data` as folded stacks (`thread;caller;…;leaf NANOSECONDS`; cpu-clock
    /// samples weigh their period), kernel frames marked `_[k]`, without the `[unknown]` frame
    /// perf puts where unwinding ends.
    pub fn fold(&self, data: &Path) -> anyhow::Result<String> {
        // Inlined frames are left out: resolving them takes perf minutes per profile.
        let mut script = Command::new(&self.program)
            .args(["script", "--no-inline", "-i"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf script")?;
        let stdout = script.stdout.take().context("perf script has no stdout")?;
        let mut options = FoldOptions::default();
        options.annotate_kernel = true;
        let mut folder = Folder::from(options);
        let mut folded = Vec::new();
        let collapsed = folder.collapse(BufReader::new(stdout), &mut folded);
        let status = script.wait()?;
        collapsed.context("folding perf script's output")?;
        if !status.success() {
            bail!("perf script -i {} failed: {status}", data.display());
        }
        let folded = String::from_utf8(folded).context("folded stacks are text")?;
        Ok(without_unwinding_end(&folded))
    }
}

/// A `perf record` running.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

impl Recording {
    /// Waits until the recording is done; returns its data file.
    pub async fn finish(mut self) -> anyhow::Result<PathBuf> {
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !status.success() {
            let mut said = String::new();
            if let Some(mut stderr) = self.child.stderr.take() {
                stderr.read_to_string(&mut said)?;
            }
            bail!("perf record failed ({status}): {said}");
        }
        Ok(self.data)
    }
}

/// Writes the flame graph of `folded` stacks to `out` (SVG), colored by name so that the same
/// profile always gives the same picture.
pub fn flame_graph(folded: &str, title: &str, subtitle: &str, out: &Path) -> anyhow::Result<()> {
    let mut options = GraphOptions::default();
    options.title = title.to_owned();
    options.subtitle = Some(subtitle.to_owned());
    options.count_name = "ns of CPU".to_owned();
    options.hash = true;
    options.deterministic = true;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    flamegraph::from_lines(&mut options, folded.lines(), std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", out.display()))
}

/// `folded` without the `[unknown]` frame perf reports beyond the outermost frame it unwound
/// (it sits right below the thread's name in every stack).
fn without_unwinding_end(folded: &str) -> String {
    let mut out = String::with_capacity(folded.len());
    for line in folded.lines() {
        match line.split_once(';') {
            Some((thread, rest)) => {
                let rest = rest.strip_prefix("[unknown];").unwrap_or(rest);
                out.push_str(thread);
                out.push(';');
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_frame_where_unwinding_ends_is_dropped() {
        let folded = "cz-proxy;[unknown];main;poll 5\ncz-proxy;main;[unknown];read 2\n";
        assert_eq!(
            without_unwinding_end(folded),
            "cz-proxy;main;poll 5\ncz-proxy;main;[unknown];read 2\n"
        );
    }
}
