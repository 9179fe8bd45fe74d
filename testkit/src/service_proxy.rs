//! Services as real addresses, like kube-proxy: each Service port listens on its ClusterIP in
//! the cluster network, and a `NodePort` Service's ports also on the host's 127.0.0.1 (a node's
//! address); every new connection (or UDP flow) goes to a ready endpoint of the Service,
//! round-robin, from inside the cluster network. As
//! with kube-proxy, the endpoints a Service forwards to are its EndpointSlice's ready endpoints
//! (or, when none is ready, its terminating but serving ones) as they were `lag` ago ([`crate::ClusterOptions::endpoint_lag`]): after a selector change or a
//! pod's deletion, new connections keep going to the old backends for that long, which is when
//! a careless client of the cluster loses requests.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::network::ClusterNetwork;
use crate::resources::{ENDPOINT_SLICES, SERVICES};
use crate::selector::Selector;
use crate::store::Store;

/// A listener: Service namespace and name, where it listens, protocol.
type ListenerKey = (String, String, Listen, String);

/// Where a Service port listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Listen {
    /// On its ClusterIP, in the cluster network.
    ClusterIp(SocketAddr),
    /// On the host's 127.0.0.1 at the node port, forwarding to the Service port.
    NodePort { node_port: u16, port: u16 },
}

impl Listen {
    /// The Service port it forwards.
    fn service_port(self) -> u16 {
        match self {
            Self::ClusterIp(address) => address.port(),
            Self::NodePort { port, .. } => port,
        }
    }
}
/// A Service, by namespace and name.
type ServiceKey = (String, String);
/// A Service's ready backends, by Service port number.
type Backends = HashMap<u16, Vec<SocketAddr>>;

/// What the Services forward to now: each one's backends as its Endpoints said `lag` ago.
#[derive(Default)]
pub struct Forwarding {
    services: RwLock<HashMap<ServiceKey, Backends>>,
}

impl Forwarding {
    /// Whether every Service forwards to the endpoints its EndpointSlice lists now (no
    /// change is still on its way).
    pub fn is_current(&self, store: &Store) -> bool {
        let current = endpoint_backends(store);
        let services = self.services.read().expect("not poisoned");
        services.keys().all(|key| current.contains_key(key))
            && current
                .iter()
                .all(|(key, backends)| services.get(key).unwrap_or(&Backends::new()) == backends)
    }
}

/// Endpoint changes on their way to [`Forwarding`], each applied `lag` after it was seen.
struct DelayLine {
    lag: Duration,
    /// The latest backends seen per Service (applied or not).
    seen: HashMap<ServiceKey, Backends>,
    pending: VecDeque<(Instant, ServiceKey, Backends)>,
}

impl DelayLine {
    /// Queues every Service whose backends differ from what was last seen.
    fn observe(&mut self, current: HashMap<ServiceKey, Backends>) {
        let now = Instant::now();
        let gone: Vec<ServiceKey> = self
            .seen
            .keys()
            .filter(|key| !current.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.seen.remove(&key);
            self.pending
                .push_back((now + self.lag, key, Backends::new()));
        }
        for (key, backends) in current {
            if self.seen.get(&key) != Some(&backends) {
                self.seen.insert(key.clone(), backends.clone());
                self.pending.push_back((now + self.lag, key, backends));
            }
        }
    }

    /// Applies the changes that are due; returns when the next one will be.
    fn apply_due(&mut self, forwarding: &Forwarding) -> Option<Instant> {
        let now = Instant::now();
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, key, backends) = self.pending.pop_front().expect("a due change");
            let mut services = forwarding.services.write().expect("not poisoned");
            if backends.is_empty() {
                services.remove(&key);
            } else {
                services.insert(key, backends);
            }
        }
        self.pending.front().map(|(due, _, _)| *due)
    }
}

/// Each Service's backends according to its EndpointSlice now, as kube-proxy picks them: the
/// ready endpoints, or when none is ready, the terminating ones still serving (a deleted pod
/// keeps taking new connections until its replacement is ready), with each Service port's
/// endpoint port found by port name.
fn endpoint_backends(store: &Store) -> HashMap<ServiceKey, Backends> {
    let (services, _) = store.list(&SERVICES, None, &Selector::default());
    let mut all = HashMap::new();
    for service in &services {
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let Ok(slice) = store.get(&ENDPOINT_SLICES, namespace, name) else {
            continue;
        };
        let endpoints = slice["endpoints"].as_array().cloned().unwrap_or_default();
        let condition = |endpoint: &Value, name: &str| endpoint["conditions"][name] == true;
        let ready: Vec<&Value> = endpoints.iter().filter(|e| condition(e, "ready")).collect();
        let usable = if ready.is_empty() {
            endpoints
                .iter()
                .filter(|e| condition(e, "serving") && condition(e, "terminating"))
                .collect()
        } else {
            ready
        };
        let mut backends = Backends::new();
        for port in service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(number) = port["port"].as_u64() else {
                continue;
            };
            let port_name = port.get("name").and_then(Value::as_str).unwrap_or_default();
            let Some(target) = slice["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
                .and_then(|p| p["port"].as_u64())
            else {
                continue;
            };
            let addresses: Vec<SocketAddr> = usable
                .iter()
                .filter_map(|e| e["addresses"][0].as_str()?.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, target as u16))
                .collect();
            if !addresses.is_empty() {
                backends.insert(number as u16, addresses);
            }
        }
        all.insert((namespace.to_owned(), name.to_owned()), backends);
    }
    all
}

/// Runs the Service listeners until `shutdown`; endpoint changes take effect `lag` after the
/// Endpoints show them.
pub async fn run(
    store: Arc<Store>,
    network: Arc<ClusterNetwork>,
    forwarding: Arc<Forwarding>,
    lag: Duration,
    shutdown: CancellationToken,
) {
    let mut listeners: HashMap<ListenerKey, CancellationToken> = HashMap::new();
    let mut changes = store.subscribe();
    let next = Arc::new(AtomicUsize::new(0));
    let mut delay = DelayLine {
        lag,
        seen: HashMap::new(),
        pending: VecDeque::new(),
    };
    loop {
        delay.observe(endpoint_backends(&store));
        let next_due = delay.apply_due(&forwarding);
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
                if let Some(node_port) = port["nodePort"].as_u64() {
                    wanted.push((
                        namespace.clone(),
                        name.clone(),
                        Listen::NodePort {
                            node_port: node_port as u16,
                            port: number as u16,
                        },
                        protocol.clone(),
                    ));
                }
                wanted.push((
                    namespace,
                    name,
                    Listen::ClusterIp(SocketAddr::new(ip, number as u16)),
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
            let (namespace, name, listen, protocol) = key.clone();
            let backend = Backend {
                network: network.clone(),
                forwarding: forwarding.clone(),
                service: (namespace, name),
                port: listen.service_port(),
                next: next.clone(),
            };
            let udp = protocol == "UDP";
            let bound = match (listen, udp) {
                (Listen::ClusterIp(address), true) => network.bind_udp(address).map(Bound::Udp),
                (Listen::ClusterIp(address), false) => network.bind_tcp(address).map(Bound::Tcp),
                (Listen::NodePort { node_port, .. }, true) => {
                    UdpSocket::bind((Ipv4Addr::LOCALHOST, node_port))
                        .await
                        .map(Bound::Udp)
                }
                (Listen::NodePort { node_port, .. }, false) => {
                    TcpListener::bind((Ipv4Addr::LOCALHOST, node_port))
                        .await
                        .map(Bound::Tcp)
                }
            };
            match bound {
                Ok(Bound::Udp(socket)) => {
                    drop(tokio::spawn(relay_udp(socket, backend, stop.clone())))
                }
                Ok(Bound::Tcp(listener)) => {
                    drop(tokio::spawn(forward_tcp(listener, backend, stop.clone())))
                }
                Err(error) => warn!(?listen, %error, udp, "cannot listen for the Service"),
            }
            listeners.insert(key, stop);
        }
        let wake = next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.recv() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// A Service port's socket.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Picks a backend for each new connection to one Service port.
struct Backend {
    network: Arc<ClusterNetwork>,
    forwarding: Arc<Forwarding>,
    service: ServiceKey,
    port: u16,
    next: Arc<AtomicUsize>,
}

impl Backend {
    /// A ready endpoint for this port, round-robin among those the proxy forwards to now.
    fn pick(&self) -> Option<SocketAddr> {
        let services = self.forwarding.services.read().expect("not poisoned");
        let ready = services.get(&self.service)?.get(&self.port)?;
        Some(ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()])
    }
}

async fn forward_tcp(listener: TcpListener, backend: Backend, stop: CancellationToken) {
    loop {
        let mut client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok((client, _)) => client, Err(_) => continue },
        };
        let Some(target) = backend.pick() else {
            debug!(service = %backend.service.1, "no ready endpoint; connection refused");
            continue;
        };
        let network = backend.network.clone();
        tokio::spawn(async move {
            if let Ok(mut pod) = network.connect(target).await {
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
                let Ok(flow) = backend
                    .network
                    .bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A store with Service `demo/echo` (port 80 → 8080) and its EndpointSlice listing `endpoints`.
    fn store_with(endpoints: Value) -> Store {
        let store = Store::new(200, 30000..30100);
        let namespace = json!({"metadata": {"name": "demo"}});
        store
            .create(&crate::resources::NAMESPACES, "", namespace)
            .expect("namespace");
        let service = json!({"metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}});
        store.create(&SERVICES, "demo", service).expect("service");
        let slice = json!({"metadata": {"name": "echo"}, "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "", "port": 8080}]});
        store
            .create(&ENDPOINT_SLICES, "demo", slice)
            .expect("slice");
        store
    }

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn backends(store: &Store) -> Vec<SocketAddr> {
        let key = ("demo".to_owned(), "echo".to_owned());
        let all = endpoint_backends(store);
        all.get(&key)
            .and_then(|b| b.get(&80))
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn ready_endpoints_are_used_and_terminating_serving_ones_only_when_none_is_ready() {
        let old = endpoint("127.0.0.5", false, true, true);
        let new = endpoint("127.0.0.6", true, true, false);
        let both = store_with(json!([old, new]));
        assert_eq!(backends(&both), ["127.0.0.6:8080".parse().expect("addr")]);
        let replacement_starting =
            store_with(json!([old, endpoint("127.0.0.6", false, false, false)]));
        assert_eq!(
            backends(&replacement_starting),
            ["127.0.0.5:8080".parse().expect("addr")],
            "a deleted pod still serving takes new connections while no other is ready"
        );
        let stopped = store_with(json!([endpoint("127.0.0.5", false, false, true)]));
        assert!(backends(&stopped).is_empty(), "not once it stops serving");
    }
}
