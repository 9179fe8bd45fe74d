//! The loopback cluster: a Kubernetes API stand-in for czctl's demo, end-to-end tests and CI,
//! where no real cluster or container engine exists. It is a test stand-in, not a product; the
//! real target stays any conformant cluster.
//!
//! - [`store`] keeps objects with the API server's write semantics; [`api`] serves them over
//!   HTTPS, routing each request to [`discovery`], the REST verbs (bodies read by
//!   [`negotiation`] as JSON or, for what kubectl sends so, [`proto`]buf; [`patch`]es), [`watch`]es
//!   and the subresources ([`scale`], [`logs`], [`portforward`]), so kube-rs and kubectl work.
//! - [`controllers`] turn Deployments into ReplicaSets and Pods and Services into Endpoints;
//!   [`kubelet`] runs pods as local processes ([`process`]), each on its own 127.x.y.z address,
//!   as their pod's user ([`run_as`]) with their Secret and ConfigMap [`volumes`] and [`logs`],
//!   and [`probe`]s their readiness; [`pod_security`] admits pods as the Pod Security admission
//!   plugin does; [`service_proxy`] serves each Service on its ClusterIP (and NodePort), like
//!   kube-proxy.
//! - [`network`] is where pods and ClusterIPs live: the host's loopback, or network namespaces
//!   ([`netns`]) the host cannot reach, as on a real cluster.
//! - [`auth`] authenticates bearer tokens (and impersonation); [`rbac`] authorizes each request
//!   from the stored Roles and bindings; [`review`] answers `kubectl auth can-i`.

pub mod address_block;
pub mod api;
pub mod auth;
pub mod body;
pub mod controllers;
pub mod discovery;
pub mod echo;
pub mod error;
pub mod kubelet;
pub mod logs;
pub mod negotiation;
pub mod netns;
pub mod network;
pub mod patch;
pub mod pod_security;
pub mod portforward;
pub mod probe;
pub mod process;
pub mod proto;
pub mod query;
pub mod rbac;
pub mod resources;
pub mod review;
pub mod run_as;
pub mod scale;
pub mod selector;
pub mod server;
pub mod service_proxy;
pub mod store;
pub mod table;
pub mod target;
pub mod validate;
pub mod volumes;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::address_block::AddressBlock;
use crate::network::{ClusterNetwork, NetworkMode};
use crate::resources::{DEPLOYMENTS, NAMESPACES, SERVICES};
use crate::selector::Selector;
use crate::store::Store;

/// How the cluster runs: where it finds the `cz-proxy` binary, how late Services follow their
/// endpoints, and which network it runs.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// The binary run for `cz-proxy` images; found next to the running executable when `None`.
    pub proxy_binary: Option<PathBuf>,
    /// How long after the Endpoints change the Services' forwarding follows, as kube-proxy lags
    /// (a second or more on real clusters). Zero (the default) switches at once; tests of
    /// zero-downtime behaviour use about a second.
    pub endpoint_lag: Duration,
    /// Whether pods and ClusterIPs are isolated from the host ([`NetworkMode::Auto`]: when the
    /// machine allows it).
    pub network: NetworkMode,
}

/// A running loopback cluster; stops (and stops its pods) when dropped or [`Cluster::stop`]ped.
pub struct Cluster {
    store: Arc<Store>,
    kubeconfig: String,
    auth: Arc<auth::Authenticator>,
    state_dir: PathBuf,
    shutdown: CancellationToken,
    kubelet: Arc<kubelet::Kubelet>,
    forwarding: Arc<service_proxy::Forwarding>,
    network: Arc<ClusterNetwork>,
    port_forwards: Arc<portforward::PortForwards>,
    network_notice: Option<String>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the address block this cluster claimed.
    _address_block: AddressBlock,
}

/// The `cz-proxy` binary: `CZ_PROXY_BIN`, else beside the running executable (or its parent,
/// for test binaries in `target/*/deps`).
fn find_proxy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CZ_PROXY_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("cz-proxy"))
        .find(|path| path.is_file())
}

impl Cluster {
    /// Starts the API server on 127.0.0.1 and the controllers, kubelet and Service proxy.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let mut address_block = AddressBlock::claim()?;
        let (pod_octet, service_octet) = (address_block.pod_octet(), address_block.service_octet());
        let (network, network_notice) = ClusterNetwork::new(
            options.network,
            address_block.index(),
            pod_octet,
            service_octet,
        )?;
        let network = Arc::new(network);
        let store = Arc::new(Store::new(service_octet, address_block.node_ports()));
        for namespace in ["default", "kube-system"] {
            store.create(&NAMESPACES, "", json!({"metadata": {"name": namespace}}))?;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let tls = Arc::new(server::Tls::generate()?);
        let kubeconfig = tls.kubeconfig(address);
        address_block.record(address, network.namespace())?;
        let state_dir =
            std::env::temp_dir().join(format!("cz-testkit-{}-{pod_octet}", std::process::id()));
        volumes::create_dir(&state_dir)?;
        let shutdown = CancellationToken::new();
        let proxy_binary = options
            .proxy_binary
            .or_else(find_proxy_binary)
            .map(|binary| run_as::reachable_binary(&binary, &state_dir))
            .transpose()?;
        let pod_dirs = logs::PodDirs::new(state_dir.clone());
        let kubelet = kubelet::Kubelet::new(
            store.clone(),
            proxy_binary,
            pod_dirs.clone(),
            network.clone(),
            pod_octet,
        );
        let auth = Arc::new(auth::Authenticator::default());
        let port_forwards = Arc::new(portforward::PortForwards::default());
        let api = Arc::new(api::Api {
            store: store.clone(),
            address: address.to_string(),
            auth: auth.clone(),
            pod_dirs,
            network: network.clone(),
            port_forwards: port_forwards.clone(),
        });
        let forwarding = Arc::new(service_proxy::Forwarding::default());
        let tasks = vec![
            tokio::spawn(server::serve(listener, tls, api, shutdown.clone())),
            tokio::spawn(controllers::run(store.clone(), shutdown.clone())),
            tokio::spawn(kubelet.clone().run(shutdown.clone())),
            tokio::spawn(service_proxy::run(
                store.clone(),
                network.clone(),
                forwarding.clone(),
                options.endpoint_lag,
                shutdown.clone(),
            )),
        ];
        Ok(Self {
            store,
            kubeconfig,
            auth,
            state_dir,
            shutdown,
            kubelet,
            forwarding,
            network,
            port_forwards,
            network_notice,
            tasks,
            _address_block: address_block,
        })
    }

    /// The network namespace of the cluster network (for `nsenter --net=/run/netns/NAME`), or
    /// `None` when pods and ClusterIPs share the host's loopback.
    pub fn network_namespace(&self) -> Option<&str> {
        self.network.namespace()
    }

    /// Why the cluster network is shared although isolation was asked for by default: one line
    /// for the user.
    pub fn network_notice(&self) -> Option<&str> {
        self.network_notice.as_deref()
    }

    /// Connects to `address` from inside the cluster network, as a pod would: for tests of
    /// what only the cluster reaches (ClusterIPs, pod addresses).
    pub async fn connect_inside(
        &self,
        address: std::net::SocketAddr,
    ) -> std::io::Result<tokio::net::TcpStream> {
        self.network.connect(address).await
    }

    /// A UDP socket inside the cluster network, as a pod would have.
    pub fn udp_socket_inside(&self) -> std::io::Result<tokio::net::UdpSocket> {
        self.network
            .bind_udp(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Cuts every port-forward the API server serves now, as a restart of the API server (or a
    /// load balancer's idle timeout in front of it) would; new ones are served as usual.
    pub fn cut_port_forwards(&self) {
        self.port_forwards.cut_all();
    }

    /// The kubeconfig that kubectl and kube-rs accept.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Adds user `name`, bound to each of `roles` (Role or ClusterRole objects, created here;
    /// see [`rbac::grant`]), and returns a bearer token that authenticates as it.
    pub fn add_user(&self, name: &str, roles: &[Value]) -> anyhow::Result<String> {
        for role in roles {
            rbac::grant(&self.store, name, role.clone())
                .map_err(|error| anyhow::anyhow!("binding user {name:?}: {}", error.message))?;
        }
        Ok(self.auth.mint(name, &[]))
    }

    /// The kubeconfig with a context `name` for `token` (from [`Cluster::add_user`]), current.
    pub fn user_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<String> {
        Ok(auth::add_context(&self.kubeconfig, name, token, true)?)
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.kubeconfig)
    }

    /// The objects, for tests that look behind the API.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Creates the sample: namespace `demo`, Deployment `echo` (2 replicas of `example/echo`,
    /// port 8080 `http` and 9090 `metrics`), NodePort Service `echo` (80 → `http`,
    /// 9090 → 9090).
    pub fn create_sample(&self) -> anyhow::Result<()> {
        self.store
            .create(&NAMESPACES, "", json!({"metadata": {"name": "demo"}}))?;
        let labels = json!({"app": "echo"});
        self.store.create(&DEPLOYMENTS, "demo", json!({
            "metadata": {"name": "echo", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{
                        "name": "echo", "image": "example/echo",
                        "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                    }]},
                },
            },
        }))?;
        self.store.create(
            &SERVICES,
            "demo",
            json!({
                "metadata": {"name": "echo", "labels": labels},
                "spec": {"type": "NodePort", "selector": labels, "ports": [
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9090, "targetPort": 9090},
                ]},
            }),
        )?;
        Ok(())
    }

    /// Waits until every Deployment has all its replicas available and every Service forwards
    /// to its current endpoints (after the endpoint lag).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (deployments, _) = self.store.list(&DEPLOYMENTS, None, &Selector::default());
            let pending: Vec<String> = deployments
                .iter()
                .filter(|d| {
                    d.pointer("/status/availableReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        < d.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                })
                .map(|d| {
                    format!(
                        "{}/{}",
                        d["metadata"]["namespace"].as_str().unwrap_or_default(),
                        d["metadata"]["name"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let forwarding = self.forwarding.is_current(&self.store);
            if pending.is_empty() && forwarding {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "deployments not available in time: {}{}",
                pending.join(", "),
                if forwarding {
                    ""
                } else {
                    "; Services not yet forwarding to their current endpoints"
                }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One line per Service: `service NS/NAME PORT=ADDRESS:PORT ... clusterIP=IP`, where each
    /// address is reachable from this machine when one is: the NodePort on 127.0.0.1, else the
    /// ClusterIP (reachable from here only when the network is shared).
    pub fn service_lines(&self) -> Vec<String> {
        let (services, _) = self.store.list(&SERVICES, None, &Selector::default());
        services
            .iter()
            .map(|service| {
                let ip = service
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ports: Vec<String> = service
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| match p["nodePort"].as_u64() {
                        Some(node_port) => format!("{}=127.0.0.1:{node_port}", p["port"]),
                        None => format!("{0}={ip}:{0}", p["port"]),
                    })
                    .collect();
                format!(
                    "service {}/{} {} clusterIP={ip}",
                    service["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default(),
                    service["metadata"]["name"].as_str().unwrap_or_default(),
                    ports.join(" ")
                )
            })
            .collect()
    }

    /// Stops pods (SIGTERM first), controllers and the API server.
    pub async fn stop(mut self) {
        self.kubelet.delete_all();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`: for tests,
/// instead of sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
