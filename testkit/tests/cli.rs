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
    let up = Up::start("cli", &["--sample", "--endpoint-lag", "3s"]).await;

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

    assert!(up.stop().await, "cz-testkit up exits 0 on SIGTERM");
}
