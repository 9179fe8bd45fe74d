//! The external programs the suite drives: found on PATH (or in ~/.cargo/bin), never installed
//! by the suite itself; a missing one is reported with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The programs of a run.
#[derive(Clone)]
pub struct Tools {
    /// NGINX, the reference proxy.
    pub nginx: PathBuf,
    /// HTTP/1.1 load generator.
    pub wrk: PathBuf,
    /// HTTP/2 load generator.
    pub h2load: PathBuf,
    /// The self-hosted TCP reverse tunnel behind NGINX on the reference intercepted path.
    pub rathole: PathBuf,
    /// The proxy under test.
    pub cz_proxy: PathBuf,
    /// The laptop side of the tunnel under test.
    pub czctl: PathBuf,
    /// The loopback cluster the carrier paths run in (it runs cz-proxy pods from `cz_proxy`'s
    /// directory).
    pub cz_testkit: PathBuf,
}

/// How the workspace's own programs are built.
const BUILD: &str = "cargo build --release -p cz-proxy -p czctl -p cz-testkit -p cz-bench";

impl Tools {
    /// Finds every program, or says how to install those missing.
    pub fn find() -> anyhow::Result<Self> {
        let own_dir = std::env::current_exe()
            .context("locating cz-bench")?
            .parent()
            .context("cz-bench has no directory")?
            .to_owned();
        let wanted: [(&str, &str); 7] = [
            ("nginx", "apt-get install nginx-light"),
            ("wrk", "apt-get install wrk"),
            ("h2load", "apt-get install nghttp2-client"),
            (
                "rathole",
                "cargo install rathole   (without --locked: its lock file no longer builds)",
            ),
            ("cz-proxy", BUILD),
            ("czctl", BUILD),
            ("cz-testkit", BUILD),
        ];
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (name, install) in wanted {
            let place = if name.starts_with("cz") {
                Some(own_dir.join(name)).filter(|p| p.is_file())
            } else {
                locate(name)
            };
            match place {
                Some(path) => found.push(path),
                None => missing.push(format!("  {name:<9} missing: {install}")),
            }
        }
        if !missing.is_empty() {
            bail!(
                "the benchmark needs these programs, and installs nothing by itself:\n{}",
                missing.join("\n")
            );
        }
        let [nginx, wrk, h2load, rathole, cz_proxy, czctl, cz_testkit] =
            <[PathBuf; 7]>::try_from(found).expect("one path per wanted program");
        Ok(Self {
            nginx,
            wrk,
            h2load,
            rathole,
            cz_proxy,
            czctl,
            cz_testkit,
        })
    }

    /// One line per program with its version, for the report.
    pub fn versions(&self) -> Vec<String> {
        [
            (&self.nginx, "-v"),
            (&self.wrk, "-v"),
            (&self.h2load, "--version"),
            (&self.rathole, "--version"),
        ]
        .into_iter()
        .map(|(program, flag)| {
            let output = Command::new(program).arg(flag).output();
            let text = output
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            let first = text
                .lines()
                .find(|l| l.contains("Version"))
                .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                .unwrap_or("?");
            format!("{}: {}", name_of(program), first.trim())
        })
        .collect()
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// `name` on PATH, in ~/.cargo/bin or in /usr/sbin.
pub fn locate(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
