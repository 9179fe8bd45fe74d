//! Pods as local processes. Each pod gets its own 127.x.y.z address and a place on the
//! [`ClusterNetwork`] (a network namespace of its own when the network is isolated);
//! `cz-proxy` images run the workspace's `cz-proxy` binary, `example/echo` runs the built-in echo
//! server, any other image stays in `ImagePullBackOff` as a real kubelet would report it.
//! Readiness probes are honoured; a process that exits fails its pod; a deleted pod's process
//! gets SIGTERM, then SIGKILL after its grace period.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod supervise;

use crate::logs::PodDirs;
use crate::network::{ClusterNetwork, PodNetwork};
use crate::process;
use crate::resources::{EVENTS, PODS};
use crate::selector::Selector;
use crate::store::{Propagation, Store};

/// What an image runs as.
enum Runtime {
    Proxy(PathBuf),
    Echo,
}

/// Runs the cluster's pods.
pub struct Kubelet {
    store: Arc<Store>,
    proxy_binary: Option<PathBuf>,
    dirs: PodDirs,
    network: Arc<ClusterNetwork>,
    /// Second octet of pod addresses: 127.<octet>.x.y.
    octet: u8,
    running: Mutex<HashMap<String, CancellationToken>>,
    next_ip: Mutex<u32>,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl Kubelet {
    /// A kubelet for `store`; pods live in `dirs` and on `network`.
    pub fn new(
        store: Arc<Store>,
        proxy_binary: Option<PathBuf>,
        dirs: PodDirs,
        network: Arc<ClusterNetwork>,
        octet: u8,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            proxy_binary,
            dirs,
            network,
            octet,
            running: Mutex::default(),
            next_ip: Mutex::new(0),
        })
    }

    /// Keeps processes in line with the pods until `shutdown`, then stops them all.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.store.subscribe();
        loop {
            self.reconcile();
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, stop) in self.running.lock().expect("lock").drain() {
            stop.cancel();
        }
    }

    fn reconcile(self: &Arc<Self>) {
        let (pods, _) = self.store.list(&PODS, None, &Selector::default());
        let mut running = self.running.lock().expect("lock");
        // A terminating pod's process is stopped (the pod goes once it has: see `run_pod`).
        let present: Vec<String> = pods
            .iter()
            .filter(|p| !is_terminating(p))
            .map(|p| text(p, "/metadata/uid").to_owned())
            .collect();
        running.retain(|uid, stop| {
            let keep = present.contains(uid);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for pod in pods {
            let uid = text(&pod, "/metadata/uid").to_owned();
            let phase = text(&pod, "/status/phase");
            if running.contains_key(&uid)
                || phase == "Failed"
                || phase == "Succeeded"
                || is_terminating(&pod)
            {
                continue;
            }
            let stop = CancellationToken::new();
            running.insert(uid, stop.clone());
            let ip = self.allocate_ip();
            let kubelet = self.clone();
            tokio::spawn(async move {
                kubelet.run_pod(&pod, ip, stop.clone()).await;
                // Deleted (or its process failed): once stopped, a terminating pod goes.
                stop.cancelled().await;
                kubelet.remove_stopped(&pod);
            });
        }
    }

    /// Deletes `pod` for good if it is terminating and still the same pod (same uid).
    fn remove_stopped(&self, pod: &Value) {
        let (namespace, name) = (
            text(pod, "/metadata/namespace"),
            text(pod, "/metadata/name"),
        );
        let Ok(current) = self.store.get(&PODS, namespace, name) else {
            return;
        };
        if current["metadata"]["uid"] == pod["metadata"]["uid"] && is_terminating(&current) {
            let _ = self
                .store
                .delete(&PODS, namespace, name, Propagation::Background);
        }
    }

    fn allocate_ip(&self) -> Ipv4Addr {
        let mut next = self.next_ip.lock().expect("lock");
        *next += 1;
        Ipv4Addr::new(
            127,
            self.octet,
            (*next / 250) as u8,
            (*next % 250 + 1) as u8,
        )
    }

    fn set_status(&self, pod: &Value, mutate: impl Fn(&mut Value)) {
        let (namespace, name) = (
            text(pod, "/metadata/namespace"),
            text(pod, "/metadata/name"),
        );
        let uid = text(pod, "/metadata/uid").to_owned();
        let _ = self.store.update(&PODS, namespace, name, true, |current| {
            if current["metadata"]["uid"] == uid.as_str() {
                mutate(current);
            }
        });
    }

    fn event(&self, pod: &Value, reason: &str, message: &str) {
        let namespace = text(pod, "/metadata/namespace");
        let event = json!({
            "metadata": {"generateName": format!("{}.", text(pod, "/metadata/name"))},
            "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "source": {"component": "kubelet"},
            "firstTimestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "lastTimestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        let _ = self.store.create(&EVENTS, namespace, event);
    }

    async fn run_pod(&self, pod: &Value, ip: Ipv4Addr, stop: CancellationToken) {
        let name = text(pod, "/metadata/name").to_owned();
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.set_status(pod, |p| {
            p["status"] = json!({
                "phase": "Pending", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}], "hostIP": "127.0.0.1", "startTime": now,
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                "containerStatuses": containers.iter().map(|c| json!({"name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}})).collect::<Vec<_>>(),
            });
        });
        let network = match self.network.attach(ip) {
            Ok(network) => network,
            Err(error) => {
                let message =
                    format!("the loopback cluster could not give the pod a network: {error}");
                self.event(pod, "FailedCreatePodSandBox", &message);
                for container in &containers {
                    self.fail_container(pod, container, "CreateContainerError", &message);
                }
                return;
            }
        };
        let mut children = Vec::new();
        for container in &containers {
            let image = text(container, "/image");
            let runtime = if image.contains("cz-proxy") {
                match &self.proxy_binary {
                    Some(binary) => Runtime::Proxy(binary.clone()),
                    None => return self.fail_container(pod, container, "CreateContainerError", "the loopback cluster found no cz-proxy binary (build it, or set CZ_PROXY_BIN)"),
                }
            } else if image == "example/echo" || image.starts_with("example/echo:") {
                Runtime::Echo
            } else {
                let message = format!("Back-off pulling image \"{image}\": the loopback cluster runs only cz-proxy images and example/echo");
                self.event(
                    pod,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": not found in the loopback cluster"),
                );
                return self.fail_container(pod, container, "ImagePullBackOff", &message);
            };
            let ports = |protocol: &str| -> Vec<u16> {
                container
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == protocol
                    })
                    .filter_map(|p| p["containerPort"].as_u64())
                    .map(|p| p as u16)
                    .collect()
            };
            match runtime {
                Runtime::Echo => {
                    let (tcp, udp) = (ports("TCP"), ports("UDP"));
                    let listen = listen_address(container);
                    let served =
                        serve_echo(&network, listen, &tcp, &udp, name.clone(), stop.clone());
                    // The in-process server has no output of its own: its log says what it serves.
                    let logged = served.and_then(|()| {
                        self.log_line(
                            pod,
                            container,
                            &format!("echo server for pod {name} on {ip}: TCP ports {tcp:?}, UDP ports {udp:?}{}", if listen.is_loopback() { ", loopback only" } else { "" }),
                        )
                    });
                    if let Err(error) = logged {
                        return self.fail_container(
                            pod,
                            container,
                            "RunContainerError",
                            &error.to_string(),
                        );
                    }
                }
                Runtime::Proxy(binary) => {
                    match process::spawn(&self.store, &self.dirs, pod, container, &binary, &network)
                    {
                        Ok(child) => children.push(child),
                        Err(error) => {
                            return self.fail_container(
                                pod,
                                container,
                                "RunContainerError",
                                &error.to_string(),
                            )
                        }
                    }
                }
            }
        }
        info!(pod = %name, %ip, "pod started");
        self.supervise(pod, &containers, &network, children, stop)
            .await;
    }

    /// Appends `line` to a container's log.
    fn log_line(&self, pod: &Value, container: &Value, line: &str) -> std::io::Result<()> {
        let uid = text(pod, "/metadata/uid");
        crate::volumes::create_dir(&self.dirs.pod(uid))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dirs.log(uid, text(container, "/name")))?;
        std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes())
    }

    fn fail_container(&self, pod: &Value, container: &Value, reason: &str, message: &str) {
        warn!(
            pod = text(pod, "/metadata/name"),
            reason, message, "container not started"
        );
        let container_name = container["name"].clone();
        self.set_status(pod, |p| {
            if let Some(statuses) = p
                .pointer_mut("/status/containerStatuses")
                .and_then(Value::as_array_mut)
            {
                for status in statuses.iter_mut().filter(|s| s["name"] == container_name) {
                    status["state"] = json!({"waiting": {"reason": reason, "message": message}});
                }
            }
        });
    }

    /// Deletes every pod (used when the cluster stops).
    pub fn delete_all(&self) {
        for pod in self.store.list(&PODS, None, &Selector::default()).0 {
            let _ = self.store.delete(
                &PODS,
                text(&pod, "/metadata/namespace"),
                text(&pod, "/metadata/name"),
                Propagation::Background,
            );
        }
    }
}

/// The address the echo image listens on: its `LISTEN_ADDRESS` env (`127.0.0.1` for a server
/// reachable only from inside its pod), every address by default.
fn listen_address(container: &Value) -> Ipv4Addr {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|env| env["name"] == "LISTEN_ADDRESS")
        .and_then(|env| env["value"].as_str()?.parse().ok())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// Starts the built-in echo server of a pod on its TCP and UDP ports.
fn serve_echo(
    network: &PodNetwork,
    listen: Ipv4Addr,
    tcp: &[u16],
    udp: &[u16],
    pod: String,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listeners = tcp
        .iter()
        .map(|&port| network.bind_tcp(listen, port))
        .collect::<std::io::Result<_>>()?;
    let sockets = udp
        .iter()
        .map(|&port| network.bind_udp(listen, port))
        .collect::<std::io::Result<_>>()?;
    crate::echo::serve(listeners, sockets, pod, stop);
    Ok(())
}

/// Whether `pod` is being deleted: its process is stopping.
pub(crate) fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}
