//! What the `czctl` end-to-end tests share: a loopback cluster whose Services lag behind their
//! endpoints as kube-proxy does, the real `czctl` binary with its output read line by line, a
//! laptop app that can hold a request, HTTP clients, and a concurrent load.

pub mod browser;
pub mod http;
pub mod load;
pub mod pool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cz_testkit::network::NetworkMode;
use cz_testkit::{Cluster, ClusterOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How late the loopback cluster's Services follow endpoint changes (kube-proxy's lag).
pub const ENDPOINT_LAG: Duration = Duration::from_secs(1);
/// How long czctl may take for anything but a deadline under test (start-up, stop).
pub const CZCTL_DEADLINE: Duration = Duration::from_secs(90);
/// The namespace and Service of the sample.
pub const NAMESPACE: &str = "demo";

/// A loopback cluster with the sample, a kubeconfig file for czctl, and a client for checks.
pub struct Setup {
    pub cluster: Cluster,
    pub client: Client,
    pub kubeconfig: PathBuf,
    /// Where the sample Service `demo/echo` port 80 is reached from the test: `CLUSTERIP:80` on
    /// a shared network, its NodePort on an isolated one.
    pub service_address: String,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory named after `what`.
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "czctl-e2e-{what}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Setup {
    /// Starts the cluster with the sample on a shared network (the laptop reaches pod IPs and
    /// ClusterIPs, as with a VPN into the cluster) and waits until its pods serve.
    pub async fn start() -> Self {
        Self::start_on(NetworkMode::Shared).await
    }

    /// Starts the cluster with the sample on an isolated network, as a real cluster is: the
    /// laptop reaches only the API server, and the Service through its NodePort.
    pub async fn start_isolated() -> Self {
        Self::start_on(NetworkMode::Isolated).await
    }

    async fn start_on(network: NetworkMode) -> Self {
        let cluster = Cluster::start(ClusterOptions {
            endpoint_lag: ENDPOINT_LAG,
            network,
            ..Default::default()
        })
        .await
        .expect("the loopback cluster starts");
        cluster.create_sample().expect("the sample is created");
        cluster
            .wait_ready(Duration::from_secs(60))
            .await
            .expect("the sample's pods become ready");
        let dir =
            std::env::temp_dir().join(format!("czctl-e2e-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let kubeconfig = dir.join("kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig)
            .expect("the kubeconfig is written");
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("kubeconfig parses"),
            &Default::default(),
        )
        .await
        .expect("kube config");
        let client = Client::try_from(config).expect("kube client");
        let spec = Api::<Service>::namespaced(client.clone(), NAMESPACE)
            .get("echo")
            .await
            .expect("the sample Service")
            .spec
            .expect("a spec");
        let service_address = match network {
            NetworkMode::Isolated => {
                let node_port = spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.port == 80)
                    .and_then(|p| p.node_port)
                    .expect("the sample's NodePort");
                format!("127.0.0.1:{node_port}")
            }
            _ => format!("{}:80", spec.cluster_ip.expect("a ClusterIP")),
        };
        // The Service forwards only once its endpoints have propagated.
        cz_testkit::eventually("the sample Service to answer", CZCTL_DEADLINE, || async {
            http::answered_by(&service_address, None).await.ok()
        })
        .await;
        Self {
            cluster,
            client,
            kubeconfig,
            service_address,
            _dir: TempDir(dir),
        }
    }

    /// A directory for the test's own files, removed with the setup.
    pub fn dir(&self) -> &Path {
        &self._dir.0
    }

    /// The ClusterIP of `demo/<name>`.
    pub async fn cluster_ip(&self, name: &str) -> String {
        self.services()
            .get(name)
            .await
            .expect("the Service exists")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP")
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// `czctl ARGS -k <kubeconfig>`.
    pub fn czctl(&self, args: &[&str]) -> Command {
        let mut command = czctl(args);
        command.arg("-k").arg(&self.kubeconfig);
        command
    }

    /// Runs czctl to completion: (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        run(self.czctl(args)).await
    }

    /// Starts `czctl service intercept echo -n demo -r 80 -l <laptop_port> EXTRA` and waits for
    /// its "Intercepting" line.
    pub async fn intercept(&self, laptop_port: u16, extra: &[&str]) -> Czctl {
        let port = laptop_port.to_string();
        let args = intercept_args(&port, extra);
        let mut czctl = Czctl::spawn(self.czctl(&args));
        czctl.read_until("Intercepting").await;
        czctl
    }

    /// What a user would compare: the Service's spec, labels and annotations.
    pub async fn service_state(&self) -> Value {
        let service = self
            .services()
            .get("echo")
            .await
            .expect("Service demo/echo");
        json!({"spec": service.spec, "labels": service.metadata.labels, "annotations": service.metadata.annotations})
    }

    /// The Service's selector.
    pub async fn selector(&self) -> BTreeMap<String, String> {
        self.services()
            .get("echo")
            .await
            .expect("Service demo/echo")
            .spec
            .and_then(|s| s.selector)
            .unwrap_or_default()
    }

    /// Gives the sample Service annotations of its own, as most real Services have, so that a
    /// restore must keep them and remove only czctl's.
    pub async fn annotate_service(&self) {
        self.services()
            .patch(
                "echo",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "team.example.com/owner": "payments",
                    "prometheus.io/scrape": "true",
                }}})),
            )
            .await
            .expect("annotate the Service");
    }

    /// Everything czctl created that is still in the cluster.
    pub async fn leftovers(&self) -> Vec<String> {
        let params = ListParams::default().labels("app.kubernetes.io/managed-by=czctl");
        let mut names = Vec::new();
        let name =
            |kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                format!("{kind} {}", meta.name.clone().unwrap_or_default())
            };
        for item in Api::<Deployment>::all(self.client.clone())
            .list(&params)
            .await
            .expect("list Deployments")
            .items
        {
            names.push(name("deployment", &item.metadata));
        }
        for item in Api::<Service>::all(self.client.clone())
            .list(&params)
            .await
            .expect("list Services")
            .items
        {
            names.push(name("service", &item.metadata));
        }
        for item in Api::<Secret>::all(self.client.clone())
            .list(&params)
            .await
            .expect("list Secrets")
            .items
        {
            names.push(name("secret", &item.metadata));
        }
        names
    }

    /// Waits until nothing czctl created is left (deletion of pods and owned objects is
    /// asynchronous), or fails naming what is.
    pub async fn no_leftovers(&self, after: &str) {
        let mut last = Vec::new();
        let deadline = tokio::time::Instant::now() + CZCTL_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            last = self.leftovers().await;
            if last.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{after}, czctl's objects are still there: {last:?}");
    }

    /// Waits until a request with the intercept header through the sample Service is answered by
    /// the laptop app, or fails saying `what` did not happen.
    pub async fn laptop_answers(&self, what: &str) {
        let address = self.service_address.clone();
        cz_testkit::eventually(what, CZCTL_DEADLINE, || async {
            (http::answered_by(&address, Some(http::INTERCEPT))
                .await
                .ok()?
                == "laptop")
                .then_some(())
        })
        .await;
    }

    /// Ctrl-C to `czctl`: it must exit cleanly and leave nothing of its session behind.
    pub async fn stop_cleanly(&self, czctl: Czctl) {
        czctl.signal("INT");
        let (ok, _, stderr) = czctl.finish().await;
        assert!(ok, "{stderr}");
        self.no_leftovers("after czctl stopped").await;
    }

    /// The proxy pods (of any session) in the sample namespace.
    pub async fn proxy_pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default().labels("app.kubernetes.io/name=cz-proxy"))
            .await
            .expect("list pods")
            .items
    }
}

/// A value unique in this process run.
pub fn unique() -> u128 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos + u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A port free on 127.0.0.1 right now.
pub async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// `service intercept echo -n demo -r 80 -l LOCAL_PORT EXTRA…`: the sample's intercept.
pub fn intercept_args<'a>(local_port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = sample_args(&["-r", "80", "-l", local_port]);
    args.extend_from_slice(extra);
    args
}

/// `service intercept echo -n demo ARGS…`: a command on the sample's Service.
pub fn sample_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["service", "intercept", "echo", "-n", NAMESPACE];
    all.extend_from_slice(args);
    all
}

/// `czctl ARGS`, with no kubeconfig flag.
pub fn czctl(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_czctl"));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs `command` to completion (bounded): (success, stdout, stderr).
pub async fn run(mut command: Command) -> (bool, String, String) {
    let output = tokio::time::timeout(CZCTL_DEADLINE, command.output())
        .await
        .expect("czctl finishes within its deadline")
        .expect("czctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running czctl whose output is read line by line, as it comes: a czctl printing a line per
/// intercepted request must never wait for the test to read them.
pub struct Czctl {
    pub child: Child,
    lines_rx: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Czctl {
    /// Spawns `command` with its output piped.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("czctl starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(line) = lines.next_line().await.expect("read czctl's output") {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines_rx,
            seen: Vec::new(),
        }
    }

    /// Reads output until a line containing `wanted`; fails with everything czctl said if it
    /// ends first or takes longer than [`CZCTL_DEADLINE`].
    pub async fn read_until(&mut self, wanted: &str) -> String {
        let found = tokio::time::timeout(CZCTL_DEADLINE, async {
            while let Some(line) = self.lines_rx.recv().await {
                self.seen.push(line.clone());
                if line.contains(wanted) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => {
                let stderr = self.stderr().await;
                panic!(
                    "czctl ended without printing {wanted:?}: {:?} {stderr}",
                    self.seen
                )
            }
            Err(_) => panic!(
                "czctl did not print {wanted:?} within {CZCTL_DEADLINE:?}: {:?}",
                self.seen
            ),
        }
    }

    async fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), pipe.read_to_string(&mut stderr))
                .await;
        }
        stderr
    }

    /// Sends `signal` (`INT`, `TERM`, `KILL`) to czctl.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("czctl is running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for czctl to exit (bounded); returns (success, the rest of stdout as lines, stderr).
    pub async fn finish(mut self) -> (bool, Vec<String>, String) {
        let rest = tokio::time::timeout(CZCTL_DEADLINE, async {
            let mut rest = Vec::new();
            while let Some(line) = self.lines_rx.recv().await {
                rest.push(line);
            }
            rest
        })
        .await
        .unwrap_or_else(|_| panic!("czctl did not finish within {CZCTL_DEADLINE:?}"));
        let stderr = self.stderr().await;
        let status = tokio::time::timeout(CZCTL_DEADLINE, self.child.wait())
            .await
            .expect("czctl exits")
            .expect("czctl's status");
        (status.success(), rest, stderr)
    }
}
