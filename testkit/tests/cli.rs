//! `cz-testkit up` as the demo runs it: its flags reach the cluster.

#[path = "support/up.rs"]
mod up;

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use up::Up;

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
    let up = Up::start("cli-lag", &["--sample", "--endpoint-lag", "3s"]).await;

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&up.kubeconfig).expect("the kubeconfig it wrote"),
        &Default::default(),
    )
    .await
    .expect("config");
    let services: Api<Service> = Api::namespaced(Client::try_from(config).expect("client"), "demo");
    // A new Service for the sample's ready pods forwards only once the lag has passed.
    let late: Service = serde_json::from_value(json!({
        "metadata": {"name": "late"},
        "spec": {"type": "NodePort", "selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .expect("a Service");
    let created = tokio::time::Instant::now();
    let late = services
        .create(&PostParams::default(), &late)
        .await
        .expect("created");
    let node_port = late
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .expect("a NodePort");
    let address = format!("127.0.0.1:{node_port}");
    cz_testkit::eventually("the new Service to forward", CONVERGE, || async {
        answers(&address).await.then_some(())
    })
    .await;
    assert!(
        created.elapsed() >= LAG,
        "forwarded after {:?}, before the lag",
        created.elapsed()
    );

    assert!(up.stop().await, "cz-testkit up exits 0 on SIGTERM");
}

#[tokio::test]
async fn up_isolates_the_network_and_exec_runs_inside_it() {
    let up = Up::start("cli-network", &["--sample", "--network", "isolated"]).await;
    let namespace = up
        .line("network isolated ")
        .strip_prefix("network isolated ")
        .expect("the namespace")
        .to_owned();
    let service = up.line("service demo/echo ").to_owned();
    let field = |prefix: &str| {
        service
            .split(' ')
            .find_map(|field| field.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {service:?}"))
            .to_owned()
    };
    let node_port = field("80=");
    assert!(node_port.starts_with("127.0.0.1:"), "{service}");
    let cluster_ip = field("clusterIP=");

    // The sample's NodePort answers on the host; its ClusterIP only inside the cluster.
    assert!(
        answers(&node_port).await,
        "the NodePort {node_port} answers"
    );
    assert!(
        tokio::net::TcpStream::connect(format!("{cluster_ip}:80"))
            .await
            .is_err(),
        "the host reached the ClusterIP {cluster_ip}"
    );
    let inside = tokio::process::Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
        .arg("exec")
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args([
            "--",
            "curl",
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{cluster_ip}/"))
        .output()
        .await
        .expect("cz-testkit exec runs");
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout),
        "200",
        "curl inside the cluster: {}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
        .arg("exec")
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args(["--", "false"])
        .status()
        .await
        .expect("cz-testkit exec runs");
    assert_eq!(
        refused.code(),
        Some(1),
        "exec passes the command's exit code on"
    );

    assert!(up.stop().await, "cz-testkit up exits 0 on SIGTERM");
    let prefix = namespace
        .strip_suffix("node")
        .expect("the node's namespace");
    assert_eq!(
        cz_testkit::netns::names_with_prefix(prefix),
        Vec::<String>::new()
    );
}
