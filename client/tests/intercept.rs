//! `czctl service intercept` end to end, as users run it: the real `czctl` binary against the
//! loopback cluster, with traffic flowing through the Service before, during and after.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cz_testkit::{Cluster, ClusterOptions};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

struct Setup {
    cluster: Cluster,
    client: Client,
    kubeconfig: PathBuf,
    service_address: String,
    laptop_port: u16,
    _laptop: CancellationToken,
}

async fn setup() -> Setup {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster");
    cluster.create_sample().expect("sample");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let kubeconfig = std::env::temp_dir().join(format!(
        "czctl-e2e-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("yaml"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let service: Service = Api::namespaced(client.clone(), "demo")
        .get("echo")
        .await
        .expect("service");
    let service_address = format!(
        "{}:80",
        service.spec.and_then(|s| s.cluster_ip).expect("cluster IP")
    );
    // The developer's local app: the echo server, answering as "laptop".
    let laptop_port = free_port().await;
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
        client,
        kubeconfig,
        service_address,
        laptop_port,
        _laptop: laptop,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn czctl(kubeconfig: &PathBuf, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_czctl"));
    command
        .args(args)
        .arg("-k")
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs czctl to completion; returns (success, stdout, stderr).
async fn czctl_output(kubeconfig: &PathBuf, args: &[&str]) -> (bool, String, String) {
    let output = czctl(kubeconfig, args).output().await.expect("czctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts an intercept and waits for its summary line; returns the process and its output so far.
async fn start_intercept(setup: &Setup, extra: &[&str]) -> (Child, Vec<String>) {
    let port = setup.laptop_port.to_string();
    let mut args = vec![
        "service",
        "intercept",
        "echo",
        "-n",
        "demo",
        "-r",
        "80",
        "-l",
        port.as_str(),
    ];
    args.extend_from_slice(extra);
    let mut child = czctl(&setup.kubeconfig, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let summary = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            seen.push(line.clone());
            if line.starts_with("Intercepting") {
                return;
            }
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await
            .ok();
        panic!("czctl ended before intercepting: {seen:?} {stderr}");
    })
    .await;
    summary.expect("intercept starts within a minute");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

/// Who answers a request to `address` (a fresh connection each time).
async fn answered_by(address: &str, intercept_header: bool) -> Result<String, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let header = if intercept_header {
        "x-c6o-intercept: yes\r\n"
    } else {
        ""
    };
    stream
        .write_all(
            format!("GET /probe HTTP/1.1\r\nhost: echo.demo\r\n{header}connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| format!("no body in {reply:?}"))?;
    let json: Value = serde_json::from_str(body.trim()).map_err(|e| format!("{e}: {reply:?}"))?;
    json["pod"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| reply.clone())
}

/// A steady stream of requests without the header; counts failures and non-cluster answers.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyLoad {
    fn start(address: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, n, f) = (stop.clone(), sent.clone(), failures.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match answered_by(&address, false).await {
                    Ok(pod) if pod.starts_with("echo-") => {}
                    Ok(other) => f.lock().expect("lock").push(format!("answered by {other}")),
                    Err(error) => f.lock().expect("lock").push(error),
                }
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            stop,
            sent,
            failures,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        (
            self.sent.load(Ordering::Relaxed),
            self.failures.lock().expect("lock").clone(),
        )
    }
}

fn interrupt(child: &Child) {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
}

/// Everything czctl created that is still in the cluster.
async fn leftovers(client: &Client) -> Vec<String> {
    let params = ListParams::default().labels("app.kubernetes.io/managed-by=czctl");
    let mut names = Vec::new();
    for item in Api::<k8s_openapi::api::apps::v1::Deployment>::all(client.clone())
        .list(&params)
        .await
        .expect("list")
        .items
    {
        names.push(format!(
            "deployment {}",
            item.metadata.name.unwrap_or_default()
        ));
    }
    for item in Api::<Service>::all(client.clone())
        .list(&params)
        .await
        .expect("list")
        .items
    {
        names.push(format!(
            "service {}",
            item.metadata.name.unwrap_or_default()
        ));
    }
    for item in Api::<k8s_openapi::api::core::v1::Secret>::all(client.clone())
        .list(&params)
        .await
        .expect("list")
        .items
    {
        names.push(format!("secret {}", item.metadata.name.unwrap_or_default()));
    }
    names
}

/// What a user would compare: the Service's spec, labels and annotations.
async fn service_state(client: &Client) -> Value {
    let service: Service = Api::namespaced(client.clone(), "demo")
        .get("echo")
        .await
        .expect("service");
    json!({"spec": service.spec, "labels": service.metadata.labels, "annotations": service.metadata.annotations})
}

#[tokio::test]
async fn intercept_routes_by_header_and_restores_everything_without_dropping_requests() {
    let setup = setup().await;
    let before = service_state(&setup.client).await;
    let load = SteadyLoad::start(setup.service_address.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut child, progress) = start_intercept(&setup, &[]).await;
    assert!(
        progress.iter().any(|l| l.contains("proxy ready")),
        "{progress:?}"
    );
    assert_eq!(
        answered_by(&setup.service_address, true)
            .await
            .expect("answer"),
        "laptop"
    );
    assert!(answered_by(&setup.service_address, false)
        .await
        .expect("answer")
        .starts_with("echo-"));
    // The Service's other port passes through the proxy to the pods, header or not.
    let metrics_address = setup.service_address.replace(":80", ":9090");
    let metrics_pod = answered_by(&metrics_address, true).await.expect("answer");
    assert!(metrics_pod.starts_with("echo-"), "{metrics_pod}");

    let (ok, listing, _) = czctl_output(&setup.kubeconfig, &["session", "list", "-A"]).await;
    assert!(
        ok && listing.contains("demo/echo") && listing.trim_end().ends_with("yes"),
        "{listing}"
    );

    // Someone else labels the Service meanwhile: that change must survive the restore.
    let services: Api<Service> = Api::namespaced(setup.client.clone(), "demo");
    services
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .expect("label");

    let proxy_pod =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(setup.client.clone(), "demo")
            .list(&ListParams::default().labels("app.kubernetes.io/name=cz-proxy"))
            .await
            .expect("pods")
            .items
            .remove(0);
    let proxy_admin = format!(
        "{}:9901",
        proxy_pod.status.and_then(|s| s.pod_ip).expect("pod IP")
    );
    assert!(
        TcpStream::connect(&proxy_admin).await.is_ok(),
        "the proxy process serves"
    );

    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("czctl stops")
        .expect("status");
    assert!(status.success(), "czctl exits 0 after Ctrl-C");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} requests without the header failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 50, "the load ran ({sent} requests)");

    let mut expected = before;
    expected["labels"]["team"] = json!("payments");
    assert_eq!(
        service_state(&setup.client).await,
        expected,
        "the Service is exactly as before, plus the other change"
    );
    cz_testkit::eventually(
        "the proxy process to stop",
        Duration::from_secs(30),
        || async {
            TcpStream::connect(&proxy_admin)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
    drop(setup.cluster);
}

#[tokio::test]
async fn a_killed_czctl_is_cleaned_up_by_clean_and_session_close() {
    let setup = setup().await;
    let before = service_state(&setup.client).await;
    let (mut child, _) = start_intercept(&setup, &[]).await;
    child.kill().await.expect("SIGKILL");
    assert_ne!(
        service_state(&setup.client).await,
        before,
        "the crash left the Service switched"
    );

    let port = setup.laptop_port.to_string();
    let (ok, _, stderr) = czctl_output(
        &setup.kubeconfig,
        &["service", "intercept", "echo", "-n", "demo", "-l", &port],
    )
    .await;
    assert!(
        !ok && stderr.contains("already intercepted") && stderr.contains("--clean"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = czctl_output(
        &setup.kubeconfig,
        &["service", "intercept", "echo", "-n", "demo", "--clean"],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("service selector restored"), "{stdout}");
    assert_eq!(service_state(&setup.client).await, before);
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
    assert!(
        answered_by(&setup.service_address, true)
            .await
            .expect("answer")
            .starts_with("echo-"),
        "traffic is back on the pods"
    );

    // Both are idempotent: nothing left is fine. (--quiet prints nothing but errors.)
    let (ok, stdout, stderr) = czctl_output(
        &setup.kubeconfig,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "--clean",
            "-q",
        ],
    )
    .await;
    assert!(ok && stdout.is_empty(), "{stdout}{stderr}");
    let (ok, stdout, stderr) = czctl_output(&setup.kubeconfig, &["session", "close", "-A"]).await;
    assert!(
        ok && stdout.contains("0 intercept(s) closed"),
        "{stdout}{stderr}"
    );
}

#[tokio::test]
async fn a_crash_half_way_through_set_up_is_cleaned_up_by_session_close() {
    let setup = setup().await;
    let before = service_state(&setup.client).await;
    let port = setup.laptop_port.to_string();
    let mut child = czctl(
        &setup.kubeconfig,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-r",
            "80",
            "-l",
            &port,
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut killed = false;
    while let Some(line) = lines.next_line().await.expect("read") {
        if line.contains("created shadow service") {
            child.kill().await.expect("SIGKILL");
            killed = true;
            break;
        }
    }
    assert!(killed, "czctl ended before creating the shadow service");
    assert!(
        !leftovers(&setup.client).await.is_empty(),
        "the crash left objects behind"
    );
    let (ok, _, stderr) =
        czctl_output(&setup.kubeconfig, &["session", "close", "-n", "demo"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
    assert_eq!(service_state(&setup.client).await, before);
}

#[tokio::test]
async fn mistakes_get_clear_errors_and_change_nothing() {
    let setup = setup().await;
    let before = service_state(&setup.client).await;
    let kc = &setup.kubeconfig;
    let (ok, _, stderr) = czctl_output(kc, &["service", "intercept", "ecoh", "-n", "demo"]).await;
    assert!(
        !ok && stderr.contains("service \"ecoh\" not found in namespace \"demo\"")
            && stderr.contains("closest first: echo"),
        "{stderr}"
    );
    let (ok, _, stderr) = czctl_output(kc, &["service", "intercept", "echo", "-n", "demo"]).await;
    assert!(
        !ok && stderr.contains("has several ports: 80 (http → http/TCP), 9090")
            && stderr.contains("-r/--remotePort"),
        "{stderr}"
    );
    let (ok, _, stderr) = czctl_output(
        kc,
        &["service", "intercept", "echo", "-n", "demo", "-r", "81"],
    )
    .await;
    assert!(!ok && stderr.contains("has no port 81"), "{stderr}");
    let (ok, _, stderr) = czctl_output(
        kc,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-r",
            "80",
            "-h",
            "NOCOLON",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("NAME:VALUE"), "{stderr}");
    let (ok, _, stderr) =
        czctl_output(kc, &["service", "intercept", "kubernetes", "-n", "default"]).await;
    assert!(
        !ok && stderr.contains("not found in namespace \"default\""),
        "{stderr}"
    );

    // An image the cluster cannot pull: the reason is shown and everything is rolled back.
    let port = setup.laptop_port.to_string();
    let (ok, _, stderr) = czctl_output(
        kc,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-r",
            "80",
            "-l",
            &port,
            "--proxy-image",
            "registry.invalid/cz-nope:1",
            "--timeout",
            "3s",
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("did not become ready within 3s")
            && stderr.contains("ImagePullBackOff"),
        "{stderr}"
    );
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());

    // --dry-run prints what would be created and changes nothing.
    let (ok, stdout, stderr) = czctl_output(
        kc,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-r",
            "80",
            "--dry-run",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    for expected in [
        "kind: Secret",
        "kind: Service",
        "kind: Deployment",
        "readOnlyRootFilesystem: true",
        "automountServiceAccountToken: false",
        "originalSelector",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "no key material in dry-run output"
    );
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
    assert_eq!(service_state(&setup.client).await, before);
}

#[tokio::test]
async fn a_selector_changed_by_someone_else_is_left_as_they_set_it() {
    let setup = setup().await;
    let (child, _) = start_intercept(&setup, &[]).await;
    let services: Api<Service> = Api::namespaced(setup.client.clone(), "demo");
    services
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "echo", "version": "v2"}}})),
        )
        .await
        .expect("patch");
    interrupt(&child);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("stops")
        .expect("output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let service = services.get("echo").await.expect("service");
    let selector = service.spec.and_then(|s| s.selector).expect("selector");
    assert_eq!(
        selector.get("version").map(String::as_str),
        Some("v2"),
        "their selector stays"
    );
    let annotations = service.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("czctl.io/intercept"));
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
}

#[tokio::test]
async fn the_tunnel_follows_a_replaced_proxy_pod() {
    let setup = setup().await;
    let (child, _) = start_intercept(&setup, &[]).await;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(setup.client.clone(), "demo");
    let proxy_pods = ListParams::default().labels("app.kubernetes.io/name=cz-proxy");
    let old = pods.list(&proxy_pods).await.expect("pods").items.remove(0);
    let old_name = old.metadata.name.clone().expect("name");
    pods.delete(&old_name, &Default::default())
        .await
        .expect("delete the proxy pod");
    // The Deployment replaces the pod (new IP); czctl finds it and intercepts again.
    let address = setup.service_address.clone();
    cz_testkit::eventually(
        "the laptop to answer through the new proxy pod",
        Duration::from_secs(30),
        || async { (answered_by(&address, true).await.ok()? == "laptop").then_some(()) },
    )
    .await;
    let new = pods.list(&proxy_pods).await.expect("pods").items.remove(0);
    assert_ne!(new.metadata.name, Some(old_name));
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("stops")
        .expect("status");
    assert!(status.status.success());
    assert_eq!(leftovers(&setup.client).await, Vec::<String>::new());
}
