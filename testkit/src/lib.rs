//! The loopback cluster: a Kubernetes API stand-in for czctl's demo, end-to-end tests and CI,
//! where no real cluster or container engine exists. It is a test stand-in, not a product; the
//! real target stays any conformant cluster.
//!
//! - [`store`] keeps objects with the API server's write semantics; [`api`] serves them over
//!   HTTPS (discovery, CRUD, patches, watches, `pods/portforward`), so kube-rs and kubectl work.
//! - [`controllers`] turn Deployments into ReplicaSets and Pods and Services into Endpoints;
//!   [`kubelet`] runs pods as local processes, each on its own 127.x.y.z address, as their
//!   pod's user ([`run_as`]) with their Secret and ConfigMap [`volumes`] and [`logs`];
//!   [`pod_security`] admits pods as the Pod Security admission plugin does;
//!   [`service_proxy`] serves each Service on a loopback ClusterIP, like kube-proxy.
//! - [`auth`] authenticates bearer tokens (and impersonation); [`rbac`] authorizes each request
//!   from the stored Roles and bindings; [`review`] answers `kubectl auth can-i`.

pub mod api;
pub mod auth;
pub mod controllers;
pub mod echo;
pub mod error;
pub mod kubelet;
pub mod logs;
pub mod patch;
pub mod pod_security;
pub mod portforward;
pub mod proto;
pub mod rbac;
pub mod resources;
pub mod review;
pub mod run_as;
pub mod selector;
pub mod server;
pub mod service_proxy;
pub mod store;
pub mod table;
pub mod validate;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::resources::{DEPLOYMENTS, NAMESPACES, SERVICES};
use crate::selector::Selector;
use crate::store::Store;

/// How the cluster runs: where it finds the `cz-proxy` binary, and how late Services follow
/// their endpoints.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// The binary run for `cz-proxy` images; found next to the running executable when `None`.
    pub proxy_binary: Option<PathBuf>,
    /// How long after the Endpoints change the Services' forwarding follows, as kube-proxy lags
    /// (a second or more on real clusters). Zero (the default) switches at once; tests of
    /// zero-downtime behaviour use about a second.
    pub endpoint_lag: Duration,
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
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the address block this cluster claimed.
    _address_block: std::fs::File,
}

/// How many address blocks there are: block `i` is 127.<10 + 2i>.x.y for pods and
/// 127.<11 + 2i>.x.y for Services.
const ADDRESS_BLOCKS: u8 = 50;

/// Claims an address block no other cluster on this machine uses while this one runs — in this
/// process or another (two test suites at once, a `cz-testkit up` beside a test run): a lock on a
/// file per block in the temporary directory, held by the returned file for the cluster's life
/// and released by the OS however the process ends. Returns (pod octet, Service octet, lock).
fn claim_address_block() -> anyhow::Result<(u8, u8, std::fs::File)> {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let start = (std::process::id() % u32::from(ADDRESS_BLOCKS)) as u8;
    let offset = NEXT.fetch_add(7, Ordering::Relaxed);
    for step in 0..ADDRESS_BLOCKS {
        let index = ((u16::from(start) + u16::from(offset) + u16::from(step))
            % u16::from(ADDRESS_BLOCKS)) as u8;
        let path = std::env::temp_dir().join(format!("cz-testkit-addresses-{index}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if lock.try_lock().is_ok() {
            return Ok((10 + index * 2, 11 + index * 2, lock));
        }
    }
    anyhow::bail!(
        "all {ADDRESS_BLOCKS} loopback address blocks are taken by running clusters (lock files cz-testkit-addresses-*.lock in {})",
        std::env::temp_dir().display()
    )
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
        let (pod_octet, service_octet, address_block) = claim_address_block()?;
        let store = Arc::new(Store::new(service_octet));
        for namespace in ["default", "kube-system"] {
            store.create(&NAMESPACES, "", json!({"metadata": {"name": namespace}}))?;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let tls = Arc::new(server::Tls::generate()?);
        let kubeconfig = tls.kubeconfig(address);
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
        let kubelet =
            kubelet::Kubelet::new(store.clone(), proxy_binary, pod_dirs.clone(), pod_octet);
        let auth = Arc::new(auth::Authenticator::default());
        let api = Arc::new(api::Api {
            store: store.clone(),
            address: address.to_string(),
            auth: auth.clone(),
            pod_dirs,
        });
        let forwarding = Arc::new(service_proxy::Forwarding::default());
        let tasks = vec![
            tokio::spawn(server::serve(listener, tls, api, shutdown.clone())),
            tokio::spawn(controllers::run(store.clone(), shutdown.clone())),
            tokio::spawn(kubelet.clone().run(shutdown.clone())),
            tokio::spawn(service_proxy::run(
                store.clone(),
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
            tasks,
            _address_block: address_block,
        })
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
    /// port 8080 `http` and 9090 `metrics`), Service `echo` (80 → `http`, 9090 → 9090).
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
                "spec": {"selector": labels, "ports": [
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

    /// One line per Service: `service NS/NAME PORT=CLUSTERIP:PORT ...`.
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
                    .map(|p| format!("{0}={ip}:{0}", p["port"]))
                    .collect();
                format!(
                    "service {}/{} {}",
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
