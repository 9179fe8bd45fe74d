//! Instructions per request, counted by valgrind's callgrind: a wrapper that runs a program
//! under callgrind in its place, `callgrind_control` to zero the counters and to dump them, and
//! a reader of the dump's total and of each function's own (self) instructions.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::stacks::Costs;
use crate::tools::locate;

/// valgrind's programs, found on PATH.
pub struct Callgrind {
    valgrind: PathBuf,
    control: PathBuf,
}

impl Callgrind {
    /// Finds valgrind and callgrind_control, or says which package brings them.
    pub fn find() -> anyhow::Result<Self> {
        let found = |name| {
            locate(name).with_context(|| {
                format!("{name} is missing: apt-get install valgrind (it brings callgrind)")
            })
        };
        Ok(Self {
            valgrind: found("valgrind")?,
            control: found("callgrind_control")?,
        })
    }

    /// Writes `dir/NAME-under-callgrind`, a script that runs `program` under callgrind with its
    /// arguments, writing dumps to `dir/callgrind.out.PID.N`; it execs, so the pid stays the
    /// program's. Returns the script's path, to start in place of `program`.
    pub fn wrapper(&self, program: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
        let name = program.file_name().context("a program has a file name")?;
        let script = dir.join(format!("{}-under-callgrind", name.to_string_lossy()));
        let text = format!(
            "#!/bin/sh\nexec '{}' --tool=callgrind --quiet --dump-instr=no \
             '--callgrind-out-file={}/callgrind.out.%p' '{}' \"$@\"\n",
            self.valgrind.display(),
            dir.display(),
            program.display()
        );
        std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(script)
    }

    /// Sets the counters of process `pid` to zero.
    pub fn zero(&self, pid: u32) -> anyhow::Result<()> {
        self.control(pid, "--zero")
    }

    /// Dumps the counters of process `pid` (started by a [`Self::wrapper`] of `dir`) and reads
    /// the dump; returns it with the file it was read from.
    pub fn dump(&self, pid: u32, dir: &Path) -> anyhow::Result<(Dump, PathBuf)> {
        let prefix = format!("callgrind.out.{pid}.");
        let dumps = || -> anyhow::Result<Vec<PathBuf>> {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| n.starts_with(&prefix)) {
                    found.push(path);
                }
            }
            Ok(found)
        };
        let before = dumps()?;
        self.control(pid, "--dump")?;
        let Some(file) = dumps()?.into_iter().find(|p| !before.contains(p)) else {
            bail!(
                "callgrind_control --dump {pid} wrote no {prefix}N in {}",
                dir.display()
            );
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok((Dump::parse(&text)?, file))
    }

    fn control(&self, pid: u32, command: &str) -> anyhow::Result<()> {
        let output = Command::new(&self.control)
            .arg(command)
            .arg(pid.to_string())
            .output()
            .context("running callgrind_control")?;
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !said.contains("OK") {
            bail!(
                "callgrind_control {command} {pid} failed: {said}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// A callgrind dump: instructions executed (Ir) in all, and by each function itself.
#[derive(Debug)]
pub struct Dump {
    /// Instructions executed by each function's own code (calls it makes are not counted),
    /// with their total.
    pub self_instructions: Costs,
}

impl Dump {
    /// Reads a dump in callgrind's format (`events: Ir`, any `positions:`, compressed names).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut positions = 1;
        let mut names: HashMap<&str, &str> = HashMap::new();
        let mut function = String::from("(unknown)");
        let mut next_is_call_cost = false;
        let mut total = None;
        let mut by_function: HashMap<String, u64> = HashMap::new();
        for line in text.lines() {
            if let Some(kinds) = line.strip_prefix("positions:") {
                positions = kinds.split_whitespace().count();
            } else if let Some(events) = line.strip_prefix("events:") {
                if events.split_whitespace().next() != Some("Ir") {
                    bail!("the dump counts {events:?}, not Ir first");
                }
            } else if let Some(sum) = line.strip_prefix("totals:") {
                total = sum.split_whitespace().next().and_then(|n| n.parse().ok());
            } else if let Some(name) = line.strip_prefix("fn=") {
                function = expand(name, &mut names).to_owned();
            } else if let Some(name) = line.strip_prefix("cfn=") {
                expand(name, &mut names);
            } else if line.starts_with("calls=") {
                next_is_call_cost = true;
            } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
                let instructions: u64 = line
                    .split_whitespace()
                    .nth(positions)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if !std::mem::take(&mut next_is_call_cost) {
                    *by_function.entry(function.clone()).or_default() += instructions;
                }
            }
        }
        let total = total.context("the dump has no totals: line")?;
        Ok(Self {
            self_instructions: Costs { by_function, total },
        })
    }

    /// Instructions executed in all.
    pub fn instructions(&self) -> u64 {
        self.self_instructions.total
    }
}

/// A function name as written in a dump: `(ID) NAME` defines ID, `(ID)` refers to it, `NAME`
/// is plain.
fn expand<'a>(written: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
    let Some((id, name)) = written
        .strip_prefix('(')
        .and_then(|rest| rest.split_once(')'))
    else {
        return written;
    };
    let name = name.trim_start();
    if name.is_empty() {
        names.get(id).copied().unwrap_or(written)
    } else {
        names.insert(id, name);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
# callgrind format
version: 1
positions: line
events: Ir
summary: 0

ob=(1) /usr/bin/cz-proxy
fl=(1) src/main.rs
fn=(1) main
3 10
+2 5
cfn=(2) parse
calls=4 20
20 300
fn=(2)
20 100
* 200
fn=(3) memcpy
7

totals: 315
";

    #[test]
    fn self_instructions_leave_out_the_cost_of_calls() {
        let dump = Dump::parse(DUMP).expect("a valid dump");
        assert_eq!(dump.instructions(), 315);
        let by_function = &dump.self_instructions.by_function;
        assert_eq!(by_function["main"], 15);
        // Named at its call site first (cfn=), then referred to by id alone.
        assert_eq!(by_function["parse"], 300);
        assert_eq!(by_function["memcpy"], 0);
    }

    #[test]
    fn two_positions_put_the_cost_third() {
        let dump = Dump::parse("positions: instr line\nevents: Ir\nfn=f\n0x10 3 42\ntotals: 42\n")
            .expect("a valid dump");
        assert_eq!(dump.self_instructions.by_function["f"], 42);
    }

    #[test]
    fn a_dump_without_totals_or_instructions_is_an_error() {
        assert!(Dump::parse("events: Ir\nfn=f\n1 2\n").is_err());
        assert!(Dump::parse("events: Dr\ntotals: 2\n").is_err());
    }
}
