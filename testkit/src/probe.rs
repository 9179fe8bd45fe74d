//! Readiness probes, as the kubelet runs them from the node: `httpGet` (2xx or 3xx) and
//! `tcpSocket` (connects), each within a second.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::network::ClusterNetwork;

/// One check of `probe` against `container` of the pod at `ip`.
pub async fn probe_once(
    network: &ClusterNetwork,
    probe: &Value,
    container: &Value,
    ip: Ipv4Addr,
) -> bool {
    let port_of = |port: &Value| -> Option<u16> {
        match port {
            Value::Number(n) => n.as_u64().map(|n| n as u16),
            Value::String(name) => container
                .get("ports")
                .and_then(Value::as_array)?
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .map(|p| p as u16),
            _ => None,
        }
    };
    let check = async {
        if let Some(http) = probe.get("httpGet") {
            let port = port_of(&http["port"])?;
            let mut stream = network.connect(SocketAddr::from((ip, port))).await.ok()?;
            let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
            let mut head = [0; 12];
            stream.read_exact(&mut head).await.ok()?;
            let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
            Some((200..400).contains(&status))
        } else if let Some(tcp) = probe.get("tcpSocket") {
            let port = port_of(&tcp["port"])?;
            Some(network.connect(SocketAddr::from((ip, port))).await.is_ok())
        } else {
            Some(true)
        }
    };
    tokio::time::timeout(Duration::from_secs(1), check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
