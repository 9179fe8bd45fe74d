//! A running pod's life: its readiness probes, and its processes until the pod is deleted or one
//! of them exits.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{text, Kubelet};
use crate::network::PodNetwork;
use crate::probe::probe_once;
use crate::process;

impl Kubelet {
    /// Runs the readiness probes and watches the processes until the pod is deleted or a
    /// process exits.
    pub(super) async fn supervise(
        &self,
        pod: &Value,
        containers: &[Value],
        network: &PodNetwork,
        mut children: Vec<tokio::process::Child>,
        stop: CancellationToken,
    ) {
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let probes: Vec<Option<Value>> = containers
            .iter()
            .map(|c| c.get("readinessProbe").cloned())
            .collect();
        let initial_delay = probes
            .iter()
            .flatten()
            .filter_map(|p| p["initialDelaySeconds"].as_u64())
            .max()
            .unwrap_or(0);
        let period = probes
            .iter()
            .flatten()
            .filter_map(|p| p["periodSeconds"].as_u64())
            .min()
            .unwrap_or(10)
            .max(1);
        let mut ready: Option<bool> = None;
        let mut next_probe = tokio::time::Instant::now() + Duration::from_secs(initial_delay);
        loop {
            let exited = async {
                for child in children.iter_mut() {
                    if let Ok(status) = child.wait().await {
                        return status;
                    }
                }
                std::future::pending().await
            };
            tokio::select! {
                () = stop.cancelled() => {
                    let grace = pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30).min(10);
                    for child in &mut children {
                        process::terminate(child, Duration::from_secs(grace)).await;
                    }
                    let _ = std::fs::remove_dir_all(self.dirs.pod(text(pod, "/metadata/uid")));
                    return;
                }
                status = exited => {
                    let code = status.code().unwrap_or(-1);
                    warn!(pod = text(pod, "/metadata/name"), code, "container exited; the pod fails");
                    self.set_status(pod, |p| {
                        p["status"]["phase"] = json!("Failed");
                        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
                        for status in p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut).into_iter().flatten() {
                            status["ready"] = json!(false);
                            status["state"] = json!({"terminated": {
                                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                "finishedAt": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                            }});
                        }
                    });
                    return;
                }
                () = tokio::time::sleep_until(next_probe) => {}
            }
            next_probe = tokio::time::Instant::now() + Duration::from_secs(period);
            let mut all_ready = true;
            for (container, probe) in containers.iter().zip(&probes) {
                if let Some(probe) = probe {
                    all_ready &= probe_once(&self.network, probe, container, network.ip()).await;
                }
            }
            if ready != Some(all_ready) {
                ready = Some(all_ready);
                let condition = if all_ready { "True" } else { "False" };
                let started = started.clone();
                self.set_status(pod, |p| {
                    p["status"]["phase"] = json!("Running");
                    p["status"]["conditions"] = json!([
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Initialized", "status": "True"},
                        {"type": "ContainersReady", "status": condition},
                        {"type": "Ready", "status": condition},
                    ]);
                    for status in p
                        .pointer_mut("/status/containerStatuses")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        status["ready"] = json!(all_ready);
                        status["started"] = json!(true);
                        status["state"] = json!({"running": {"startedAt": started}});
                    }
                });
            }
        }
    }
}
