//! What the clean-up tests share: a loopback cluster with the sample, the `czctl` binary run
//! against it, and the developer's local app.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cz_testkit::{Cluster, ClusterOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A cluster with the sample, its kubeconfig on disk, and a local app on `laptop_port`.
pub struct Setup {
    pub cluster: Cluster,
    pub kubeconfig: PathBuf,
    pub laptop_port: u16,
    _laptop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

pub async fn setup(name: &str) -> Setup {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster");
    cluster.create_sample().expect("sample");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("the sample becomes ready");
    let kubeconfig =
        std::env::temp_dir().join(format!("czctl-{name}-{}.kubeconfig", std::process::id()));
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let laptop_port = listener.local_addr().expect("address").port();
    drop(listener);
    let laptop = CancellationToken::new();
    cz_testkit::echo::serve(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &[laptop_port],
        &[],
        "laptop".into(),
        laptop.clone(),
    )
    .await
    .expect("laptop app");
    Setup {
        cluster,
        kubeconfig,
        laptop_port,
        _laptop: laptop,
    }
}

fn czctl(setup: &Setup, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_czctl"));
    command
        .args(args)
        .arg("-k")
        .arg(&setup.kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs czctl to completion; returns (success, stdout, stderr).
pub async fn czctl_output(setup: &Setup, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), czctl(setup, args).output())
        .await
        .expect("czctl finishes within a minute")
        .expect("czctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `czctl service intercept echo -n demo -r 80` and waits for its summary line.
pub async fn start_intercept(setup: &Setup) -> Child {
    let port = setup.laptop_port.to_string();
    let args = [
        "service",
        "intercept",
        "echo",
        "-n",
        "demo",
        "-r",
        "80",
        "-l",
        &port,
    ];
    let mut child = czctl(setup, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.starts_with("Intercepting") {
                return;
            }
            seen.push(line);
        }
        let mut stderr = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await;
        panic!("czctl ended before intercepting: {seen:?} {stderr}");
    })
    .await;
    started.expect("the intercept starts within a minute");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Sends Ctrl-C (SIGINT) to `child`.
pub fn interrupt(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGINT delivered");
}
