//! The isolated cluster network: as on a real cluster, the host reaches neither pods nor
//! ClusterIPs, port-forward reaches a pod (its loopback included), and the cluster reaches its
//! own addresses. These tests need root, as the isolated network does (CI runs as root).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cz_testkit::network::NetworkMode;
use cz_testkit::{Cluster, ClusterOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long the cluster may take to converge.
const CONVERGE: Duration = Duration::from_secs(30);

async fn start_isolated() -> (Cluster, Client) {
    let cluster = Cluster::start(ClusterOptions {
        network: NetworkMode::Isolated,
        ..Default::default()
    })
    .await
    .expect("an isolated cluster starts (this needs root)");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("kubeconfig parses"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    (cluster, client)
}

/// The echo server's answer to a request on `stream`: the pod that answered.
async fn answer(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = String::new();
    tokio::time::timeout(CONVERGE, stream.read_to_string(&mut reply))
        .await
        .expect("the answer arrives in time")
        .expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).expect("a body");
    let json: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
    json["pod"].as_str().expect("the pod's name").to_owned()
}

/// A Deployment `name` of one echo pod with `ports` (container port objects) and `env`.
async fn echo_deployment(
    client: &Client,
    name: &str,
    ports: serde_json::Value,
    env: serde_json::Value,
) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo", "ports": ports, "env": env}]},
        }},
    }))
    .expect("a Deployment");
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");
}

async fn the_pod(client: &Client, app: &str) -> (String, IpAddr) {
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list")
        .items
        .pop()
        .expect("a pod");
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("a pod IP");
    (pod.metadata.name.expect("a name"), ip)
}

#[tokio::test]
async fn the_host_reaches_pods_and_cluster_ips_only_the_kubernetes_way() {
    let (cluster, client) = start_isolated().await;
    echo_deployment(
        &client,
        "web",
        json!([{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]),
        json!([]),
    )
    .await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
        ]},
    }))
    .expect("a Service");
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    cluster.wait_ready(CONVERGE).await.expect("ready");
    let cluster_ip: IpAddr = service
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("a ClusterIP");
    let (pod, pod_ip) = the_pod(&client, "web").await;

    // From the host: nothing listens at these addresses, TCP or UDP.
    for address in [
        SocketAddr::new(pod_ip, 8080),
        SocketAddr::new(cluster_ip, 80),
    ] {
        let refused = TcpStream::connect(address).await;
        assert!(refused.is_err(), "the host reached {address}");
    }
    for address in [
        SocketAddr::new(pod_ip, 5353),
        SocketAddr::new(cluster_ip, 53),
    ] {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(address).await.expect("connect");
        socket.send(b"ping").await.expect("send");
        let mut buf = [0; 64];
        let received = tokio::time::timeout(CONVERGE, socket.recv(&mut buf))
            .await
            .expect("the refusal arrives in time");
        assert!(
            received.is_err(),
            "the host got a UDP answer from {address}"
        );
    }

    // Inside the cluster, both answer.
    let by_cluster_ip = cluster
        .connect_inside(SocketAddr::new(cluster_ip, 80))
        .await
        .expect("the ClusterIP from inside the cluster");
    assert_eq!(answer(by_cluster_ip).await, pod);
    let socket = cluster.udp_socket_inside().expect("a UDP socket inside");
    let reply = cz_testkit::eventually("a UDP answer inside the cluster", CONVERGE, || async {
        socket
            .send_to(b"ping", SocketAddr::new(cluster_ip, 53))
            .await
            .ok()?;
        let mut buf = [0; 256];
        let len = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    })
    .await;
    assert_eq!(reply, format!("{pod}: ping"));

    // From the host, port-forward through the API server reaches the pod.
    let mut forwarder = Api::<Pod>::namespaced(client, "default")
        .portforward(&pod, &[8080])
        .await
        .expect("port-forward");
    let stream = forwarder.take_stream(8080).expect("a stream");
    assert_eq!(answer(stream).await, pod);
}

#[tokio::test]
async fn a_server_on_a_pods_loopback_is_reachable_only_through_port_forward() {
    let (cluster, client) = start_isolated().await;
    echo_deployment(
        &client,
        "private",
        json!([{"name": "admin", "containerPort": 9000}]),
        json!([{"name": "LISTEN_ADDRESS", "value": "127.0.0.1"}]),
    )
    .await;
    cluster.wait_ready(CONVERGE).await.expect("ready");
    let (pod, pod_ip) = the_pod(&client, "private").await;
    let address = SocketAddr::new(pod_ip, 9000);
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the host reached the pod's loopback server"
    );
    assert!(
        cluster.connect_inside(address).await.is_err(),
        "the cluster network reached the pod's loopback server at the pod's address"
    );
    let mut forwarder = Api::<Pod>::namespaced(client, "default")
        .portforward(&pod, &[9000])
        .await
        .expect("port-forward");
    let stream = forwarder.take_stream(9000).expect("a stream");
    assert_eq!(answer(stream).await, pod);
}

#[tokio::test]
async fn the_cluster_network_goes_with_the_cluster() {
    let (cluster, client) = start_isolated().await;
    echo_deployment(&client, "web", json!([{"containerPort": 8080}]), json!([])).await;
    cluster.wait_ready(CONVERGE).await.expect("ready");
    let node = cluster
        .network_namespace()
        .expect("an isolated network has a namespace")
        .to_owned();
    let prefix = node.strip_suffix("node").expect("the node's namespace");
    let namespaces = || cz_testkit::netns::names_with_prefix(prefix);
    assert_eq!(
        namespaces().len(),
        2,
        "the node and the pod: {:?}",
        namespaces()
    );
    cluster.stop().await;
    assert_eq!(namespaces(), Vec::<String>::new());
}

#[tokio::test]
async fn cutting_port_forwards_ends_open_ones_and_serves_new_ones() {
    let (cluster, client) = start_isolated().await;
    echo_deployment(&client, "web", json!([{"containerPort": 8080}]), json!([])).await;
    cluster.wait_ready(CONVERGE).await.expect("ready");
    let (pod, _) = the_pod(&client, "web").await;
    let pods = Api::<Pod>::namespaced(client, "default");
    let mut open = pods.portforward(&pod, &[8080]).await.expect("port-forward");
    let mut stream = open.take_stream(8080).expect("a stream");
    cluster.cut_port_forwards();
    let mut buf = [0; 16];
    let ended = tokio::time::timeout(CONVERGE, stream.read(&mut buf))
        .await
        .expect("the cut port-forward ends in time");
    assert!(
        matches!(ended, Ok(0) | Err(_)),
        "a cut port-forward still carries data: {ended:?}"
    );
    let mut again = pods.portforward(&pod, &[8080]).await.expect("port-forward");
    assert_eq!(
        answer(again.take_stream(8080).expect("a stream")).await,
        pod
    );
}
