//! `cz-testkit up` as the demo runs it: its flags reach the cluster.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long the cluster may take to start and converge.
const CONVERGE: Duration = Duration::from_secs(60);

/// Whether a request to `address` gets an answer.
async fn answers(address: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: late\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply));
    matches!(read.await, Ok(Ok(_))) && reply.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn up_applies_the_endpoint_lag() {
    const LAG: Duration = Duration::from_secs(3);
    let dir = std::env::temp_dir().join(format!("cz-testkit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let kubeconfig = dir.join("kubeconfig");
    let mut cluster = tokio::process::Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
        .arg("up")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--sample", "--endpoint-lag", "3s"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cz-testkit starts");
    let mut lines = BufReader::new(cluster.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(CONVERGE, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line == "ready" {
                return;
            }
        }
        panic!("cz-testkit up ended before it was ready");
    })
    .await
    .expect("cz-testkit up is ready in time");

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig it wrote"),
        &Default::default(),
    )
    .await
    .expect("config");
    let services: Api<Service> = Api::namespaced(Client::try_from(config).expect("client"), "demo");
    // A new Service for the sample's ready pods forwards only once the lag has passed.
    let late: Service = serde_json::from_value(json!({
        "metadata": {"name": "late"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .expect("a Service");
    let created = tokio::time::Instant::now();
    let late = services
        .create(&PostParams::default(), &late)
        .await
        .expect("created");
    let address = format!(
        "{}:80",
        late.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
    );
    cz_testkit::eventually("the new Service to forward", CONVERGE, || async {
        answers(&address).await.then_some(())
    })
    .await;
    assert!(
        created.elapsed() >= LAG,
        "forwarded after {:?}, before the lag",
        created.elapsed()
    );

    let pid = cluster.id().expect("running").to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let status = tokio::time::timeout(CONVERGE, cluster.wait())
        .await
        .expect("cz-testkit stops on SIGTERM")
        .expect("status");
    assert!(status.success(), "cz-testkit up exits 0 on SIGTERM");
    std::fs::remove_dir_all(&dir).ok();
}
