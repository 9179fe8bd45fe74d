//! `cz-testkit up` as a user runs it: the real binary in its own process, with its kubeconfig in
//! a directory of the test's own, stopped (killed) when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `cz-testkit up` may take to say it is ready.
const START: Duration = Duration::from_secs(60);

/// A running `cz-testkit up`.
pub struct Up {
    child: Child,
    /// What it printed before `ready`.
    lines: Vec<String>,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Up {
    /// Runs `cz-testkit up` with `args` (after `--kubeconfig`) and waits until it prints `ready`;
    /// `name` keeps this test's files apart from other tests'.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("cz-testkit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
            .arg("up")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cz-testkit starts");
        let mut output = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let lines = tokio::time::timeout(START, async {
            let mut lines = Vec::new();
            while let Some(line) = output.next_line().await.expect("read") {
                if line == "ready" {
                    return lines;
                }
                lines.push(line);
            }
            panic!("cz-testkit up ended before it was ready: {lines:?}");
        })
        .await
        .expect("cz-testkit up is ready in time");
        Self {
            child,
            lines,
            kubeconfig,
            dir,
        }
    }
}

impl Up {
    /// The line it printed before `ready` that starts with `prefix`.
    #[allow(dead_code)] // not every test binary that includes this module reads its output
    pub fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}... in {:?}", self.lines))
    }

    /// Stops it as Ctrl-C or a service manager would (SIGTERM) and waits; whether it exited 0.
    pub async fn stop(mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(signalled.success(), "kill -TERM {pid}");
        tokio::time::timeout(START, self.child.wait())
            .await
            .expect("cz-testkit stops on SIGTERM")
            .expect("status")
            .success()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
