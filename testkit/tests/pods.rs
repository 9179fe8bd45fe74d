//! Pods as a kubelet makes them: who their process runs as, what it may read of its Secret
//! volume, which pods a Pod Security level refuses, and what `pods/log` shows of their output.

mod support;

use std::process::Stdio;
use std::time::Duration;

use cz_testkit::{Cluster, ClusterOptions};
use futures_util::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt as _;

/// How long the cluster may take to converge.
const CONVERGE: Duration = Duration::from_secs(30);

async fn start() -> (Cluster, Client) {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster starts");
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    (cluster, Client::try_from(config).expect("client"))
}

/// A cz-proxy pod spec reading its certificates from Secret `proxy-tls` (files 0400), running
/// as uid 65532, locked down as the restricted level asks, with `pod_security` merged into the
/// pod's securityContext.
fn proxy_pod_spec(pod_security: Value) -> Value {
    let mut security = json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    for (key, value) in pod_security.as_object().into_iter().flatten() {
        security[key] = value.clone();
    }
    json!({
        "securityContext": security,
        "containers": [{"name": "proxy", "image": "ghcr.io/czctl/cz-proxy:0.1.0",
            "args": ["--http-port=8080", "--upstream=127.0.0.1:1", "--admin-port=9901", "--tls-dir=/etc/cz-proxy/tls"],
            "securityContext": {"runAsUser": 65532, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tls", "mountPath": "/etc/cz-proxy/tls", "readOnly": true}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9901}, "periodSeconds": 1}}],
        "volumes": [{"name": "tls", "secret": {"secretName": "proxy-tls", "defaultMode": 0o400}}],
    })
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("a Pod")
}

/// Waits until pod `name` is ready (`Ok`) or its container has terminated (`Err(exit code)`).
async fn outcome(pods: &Api<Pod>, name: &str) -> Result<(), i32> {
    cz_testkit::eventually(
        &format!("pod {name} to be ready or to fail"),
        CONVERGE,
        || async {
            let status = pods.get(name).await.ok()?.status?;
            if let Some(code) = status
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .terminated
                .as_ref()
                .map(|t| t.exit_code)
            {
                return Some(Err(code));
            }
            status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(Ok(()))
        },
    )
    .await
}

#[tokio::test]
async fn uid_65532_reads_a_0400_secret_only_through_fs_group() {
    if !cz_testkit::run_as::is_root() {
        eprintln!("skipped: only a root testkit can run pods as uid 65532 (CI runs as root)");
        return;
    }
    let (_cluster, client) = start().await;
    support::proxy_secret(&client, "default").await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &pod("no-fsgroup", proxy_pod_spec(json!({}))),
    )
    .await
    .expect("created");
    let code = outcome(&pods, "no-fsgroup")
        .await
        .expect_err("uid 65532 cannot read root's 0400 files: cz-proxy exits");
    assert_ne!(code, 0);
    let logs = pods
        .logs("no-fsgroup", &LogParams::default())
        .await
        .expect("the failed pod's logs");
    assert!(
        logs.contains("Permission denied"),
        "cz-proxy says why it could not start: {logs}"
    );

    pods.create(
        &PostParams::default(),
        &pod("with-fsgroup", proxy_pod_spec(json!({"fsGroup": 65532}))),
    )
    .await
    .expect("created");
    assert_eq!(
        outcome(&pods, "with-fsgroup").await,
        Ok(()),
        "with fsGroup the files are group-readable and cz-proxy starts"
    );
}

#[tokio::test]
async fn a_restricted_namespace_refuses_a_pod_without_seccomp_profile() {
    let (_cluster, client) = start().await;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "locked",
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}))
    .expect("a Namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("created");
    support::proxy_secret(&client, "locked").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "locked");
    let mut spec = proxy_pod_spec(json!({}));
    spec["securityContext"]
        .as_object_mut()
        .expect("a securityContext")
        .remove("seccompProfile");
    let refused = pods
        .create(&PostParams::default(), &pod("no-seccomp", spec.clone()))
        .await
        .expect_err("refused");
    let kube::Error::Api(status) = refused else {
        panic!("not an API error: {refused}")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods \"no-seccomp\" is forbidden: violates PodSecurity \"restricted:latest\": seccompProfile \
         (pod or container \"proxy\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    pods.create(
        &PostParams::default(),
        &pod("locked-down", proxy_pod_spec(json!({"fsGroup": 65532}))),
    )
    .await
    .expect("a pod that meets the restricted level is admitted");

    // Pods a Deployment would make are refused too: its ReplicaSet records why.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "loose"},
        "spec": {"selector": {"matchLabels": {"app": "loose"}}, "template": {
            "metadata": {"labels": {"app": "loose"}}, "spec": spec}},
    }))
    .expect("a Deployment");
    Api::<Deployment>::namespaced(client.clone(), "locked")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created: admission judges pods, not Deployments");
    let events: Api<Event> = Api::namespaced(client, "locked");
    let message = cz_testkit::eventually("a FailedCreate event", CONVERGE, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedCreate"))?
            .message
    })
    .await;
    assert!(
        message.starts_with("Error creating: pods \"loose-")
            && message.contains("violates PodSecurity \"restricted:latest\": seccompProfile"),
        "{message}"
    );
    assert!(pods
        .list(&ListParams::default().labels("app=loose"))
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test]
async fn logs_show_what_the_pod_wrote_and_follow_it_until_it_stops() {
    let (cluster, client) = start().await;
    support::proxy_secret(&client, "default").await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &pod("talker", proxy_pod_spec(json!({"fsGroup": 65532}))),
    )
    .await
    .expect("created");
    assert_eq!(outcome(&pods, "talker").await, Ok(()), "the proxy starts");
    let written = pods
        .logs("talker", &LogParams::default())
        .await
        .expect("logs");
    assert!(!written.is_empty(), "cz-proxy logs as it starts");
    let last = written.lines().last().expect("a line").to_owned();
    let tail = pods
        .logs(
            "talker",
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(tail.trim_end(), last);

    let first = written.lines().next().expect("a line").to_owned();
    let mut lines = pods
        .log_stream(
            "talker",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .expect("a log stream")
        .lines();
    let streamed = tokio::time::timeout(CONVERGE, lines.try_next())
        .await
        .expect("the first line streams in time")
        .expect("read");
    assert_eq!(streamed.as_deref(), Some(first.as_str()));

    // kubectl reads the same, and `-f` ends when the pod goes.
    let dir = std::env::temp_dir().join(format!("cz-testkit-pods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let kubectl = |args: &[&str]| {
        let mut command = tokio::process::Command::new("kubectl");
        command.arg("--kubeconfig").arg(&kubeconfig).args(args);
        command
    };
    let output = kubectl(&["logs", "talker", "-c", "proxy", "--tail", "1"])
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim_end(), last);
    let mut follow = kubectl(&["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut stdout = tokio::io::BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(CONVERGE, stdout.next_line())
        .await
        .expect("kubectl logs -f prints in time")
        .expect("read");
    assert_eq!(line.as_deref(), Some(first.as_str()));
    pods.delete("talker", &DeleteParams::default())
        .await
        .expect("deleted");
    let status = tokio::time::timeout(CONVERGE, follow.wait())
        .await
        .expect("kubectl logs -f ends when the pod stops")
        .expect("wait");
    assert!(status.success());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn echo_pods_log_what_they_serve() {
    let (cluster, client) = start().await;
    cluster.create_sample().expect("sample");
    cluster.wait_ready(CONVERGE).await.expect("sample ready");
    let pods: Api<Pod> = Api::namespaced(client, "demo");
    let pod = pods
        .list(&ListParams::default().labels("app=echo"))
        .await
        .expect("list")
        .items
        .remove(0);
    let name = pod.metadata.name.expect("a name");
    let ip = pod.status.and_then(|s| s.pod_ip).expect("a pod IP");
    let logs = pods.logs(&name, &LogParams::default()).await.expect("logs");
    assert_eq!(
        logs,
        format!("echo server for pod {name} on {ip}: TCP ports [8080, 9090], UDP ports []\n")
    );
}
