//! Services as real addresses, like kube-proxy: each Service port listens on its ClusterIP, and
//! every new connection (or UDP flow) goes to a Ready pod the Service selects at that moment, so
//! a selector change redirects new connections exactly as in a real cluster.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::controllers::{selected_pods, target_port};
use crate::resources::SERVICES;
use crate::selector::Selector;
use crate::store::Store;

type ListenerKey = (String, String, SocketAddr, String);

/// Runs the Service listeners until `shutdown`.
pub async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let mut listeners: HashMap<ListenerKey, CancellationToken> = HashMap::new();
    let mut changes = store.subscribe();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (services, _) = store.list(&SERVICES, None, &Selector::default());
        let mut wanted = Vec::new();
        for service in &services {
            let Some(ip) = service
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            else {
                continue;
            };
            for port in service
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(number) = port["port"].as_u64() else {
                    continue;
                };
                let protocol = port
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_owned();
                let namespace = service["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let name = service["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                wanted.push((
                    namespace,
                    name,
                    SocketAddr::new(ip, number as u16),
                    protocol,
                ));
            }
        }
        listeners.retain(|key, stop| {
            let keep = wanted.contains(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for key in wanted {
            if listeners.contains_key(&key) {
                continue;
            }
            let stop = shutdown.child_token();
            let (namespace, name, address, protocol) = key.clone();
            let backend = Backend {
                store: store.clone(),
                namespace,
                name,
                port: address.port(),
                next: next.clone(),
            };
            match protocol.as_str() {
                "UDP" => match UdpSocket::bind(address).await {
                    Ok(socket) => drop(tokio::spawn(relay_udp(socket, backend, stop.clone()))),
                    Err(error) => warn!(%address, %error, "cannot listen for the Service (UDP)"),
                },
                _ => match TcpListener::bind(address).await {
                    Ok(listener) => {
                        drop(tokio::spawn(forward_tcp(listener, backend, stop.clone())))
                    }
                    Err(error) => warn!(%address, %error, "cannot listen for the Service"),
                },
            }
            listeners.insert(key, stop);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.recv() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Picks a pod for each new connection to one Service port.
struct Backend {
    store: Arc<Store>,
    namespace: String,
    name: String,
    port: u16,
    next: Arc<AtomicUsize>,
}

impl Backend {
    /// A Ready pod's address for this port, chosen round-robin among the Service's current pods.
    fn pick(&self) -> Option<SocketAddr> {
        let service = self
            .store
            .get(&SERVICES, &self.namespace, &self.name)
            .ok()?;
        let port = service
            .pointer("/spec/ports")?
            .as_array()?
            .iter()
            .find(|p| p["port"].as_u64() == Some(u64::from(self.port)))?
            .clone();
        let ready: Vec<_> = selected_pods(&self.store, &service)
            .into_iter()
            .filter(|pod| {
                pod.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .collect();
        if ready.is_empty() {
            return None;
        }
        let pod = &ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()];
        let ip: IpAddr = pod.pointer("/status/podIP")?.as_str()?.parse().ok()?;
        Some(SocketAddr::new(ip, target_port(&port, pod)?))
    }
}

async fn forward_tcp(listener: TcpListener, backend: Backend, stop: CancellationToken) {
    loop {
        let mut client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok((client, _)) => client, Err(_) => continue },
        };
        let Some(target) = backend.pick() else {
            debug!(service = %backend.name, "no ready endpoint; connection refused");
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut pod) = TcpStream::connect(target).await {
                let _ = (client.set_nodelay(true), pod.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
            }
        });
    }
}

/// UDP flows: each client address gets its own socket to a pod chosen at its first datagram;
/// replies come back from the Service address. Flows idle for two minutes are forgotten.
async fn relay_udp(socket: UdpSocket, backend: Backend, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0; 65_536];
    loop {
        let (len, client) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received { Ok(received) => received, Err(_) => continue },
        };
        flows.retain(|_, flow| Arc::strong_count(flow) > 1);
        let flow = match flows.get(&client) {
            Some(flow) => flow.clone(),
            None => {
                let Some(target) = backend.pick() else {
                    continue;
                };
                let Ok(flow) = UdpSocket::bind(SocketAddr::new(
                    socket.local_addr().map(|a| a.ip()).unwrap_or(target.ip()),
                    0,
                ))
                .await
                else {
                    continue;
                };
                if flow.connect(target).await.is_err() {
                    continue;
                }
                let flow = Arc::new(flow);
                flows.insert(client, flow.clone());
                let (reply, service, stop) = (flow.clone(), socket.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; 65_536];
                    loop {
                        let received = tokio::select! {
                            () = stop.cancelled() => return,
                            received = tokio::time::timeout(Duration::from_secs(120), reply.recv(&mut buf)) => received,
                        };
                        match received {
                            Ok(Ok(len)) => drop(service.send_to(&buf[..len], client).await),
                            _ => return,
                        }
                    }
                });
                flow
            }
        };
        let _ = flow.send(&buf[..len]).await;
    }
}
