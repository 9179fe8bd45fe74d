//! The first commands a user types on a new cluster, by the real `kubectl` against the real
//! `cz-testkit up`: create a Deployment, expose it, scale it, restart and undo a rollout, delete
//! a pod — each checked by what the user relies on afterwards.

#[path = "support/up.rs"]
mod up;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use up::Up;

/// How long the cluster may take to converge after a command.
const CONVERGE: Duration = Duration::from_secs(60);

/// A loopback cluster and `kubectl` pointed at it.
struct Kubectl {
    up: Up,
}

impl Kubectl {
    async fn start(name: &str) -> Self {
        Self {
            up: Up::start(name, &[]).await,
        }
    }

    /// Stops the cluster, which must exit cleanly.
    async fn stop(self) {
        assert!(self.up.stop().await, "cz-testkit up exits 0 on SIGTERM");
    }

    /// Runs `kubectl ARGS`; what it printed on success, or its error output.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.up.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Runs `kubectl ARGS`, which must succeed.
    async fn ok(&self, args: &[&str]) -> String {
        self.run(args)
            .await
            .unwrap_or_else(|error| panic!("kubectl {} failed: {error}", args.join(" ")))
    }

    /// `kubectl get ARGS -o json`.
    async fn get(&self, args: &[&str]) -> Value {
        let json = self.ok(&[&["get"], args, &["-o", "json"]].concat()).await;
        serde_json::from_str(&json).expect("kubectl prints JSON")
    }

    /// The ready, not deleted pods of Deployment `web`.
    async fn ready_pods(&self) -> Vec<Value> {
        self.get(&["pods", "-l", "app=web"]).await["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|pod| {
                pod["metadata"].get("deletionTimestamp").is_none()
                    && pod["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .cloned()
            .collect()
    }

    /// Waits until Deployment `web` has exactly `count` pods, all ready; returns their names.
    async fn wait_for_pods(&self, count: usize) -> BTreeSet<String> {
        cz_testkit::eventually(&format!("{count} ready pods"), CONVERGE, || async {
            let all = self.get(&["pods", "-l", "app=web"]).await;
            let ready = self.ready_pods().await;
            (all["items"].as_array().map(Vec::len) == Some(count) && ready.len() == count).then(
                || {
                    ready
                        .iter()
                        .map(|pod| pod["metadata"]["name"].as_str().expect("name").to_owned())
                        .collect()
                },
            )
        })
        .await
    }

    /// `kubectl rollout status` for Deployment `web`, which must report success.
    async fn rolled_out(&self) {
        let status = self
            .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
            .await;
        assert!(status.contains("successfully rolled out"), "{status}");
    }

    /// The ReplicaSets of Deployment `web` as (revision, replicas, template), oldest first.
    async fn replica_sets(&self) -> Vec<(String, i64, Value)> {
        let mut sets: Vec<_> = self.get(&["replicasets", "-l", "app=web"]).await["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|rs| {
                assert_eq!(rs["metadata"]["ownerReferences"][0]["name"], "web");
                (
                    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .expect("a revision")
                        .to_owned(),
                    rs["spec"]["replicas"].as_i64().expect("replicas"),
                    rs["spec"]["template"].clone(),
                )
            })
            .collect();
        sets.sort_by_key(|(revision, _, _)| revision.parse::<u64>().expect("a number"));
        sets
    }
}

#[tokio::test]
async fn create_deployment_then_expose_it() {
    let kubectl = Kubectl::start("kubectl-create").await;
    kubectl
        .ok(&[
            "create",
            "deployment",
            "web",
            "--image=example/echo",
            "--replicas=2",
            "--port=8080",
        ])
        .await;
    kubectl.wait_for_pods(2).await;
    for pod in kubectl.ready_pods().await {
        assert_eq!(pod["spec"]["containers"][0]["image"], "example/echo");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }
    kubectl.rolled_out().await;

    kubectl
        .ok(&[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ])
        .await;
    let service = kubectl.get(&["service", "web"]).await;
    assert_eq!(service["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    let pod_ips: BTreeSet<String> = kubectl
        .ready_pods()
        .await
        .iter()
        .map(|pod| pod["status"]["podIP"].as_str().expect("an IP").to_owned())
        .collect();
    cz_testkit::eventually("the Service's endpoints", CONVERGE, || async {
        let endpoints = kubectl.get(&["endpoints", "web"]).await;
        let addresses: BTreeSet<String> = endpoints["subsets"][0]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|address| address["ip"].as_str().map(str::to_owned))
            .collect();
        (addresses == pod_ips && endpoints["subsets"][0]["ports"][0]["port"] == 8080).then_some(())
    })
    .await;
    kubectl.stop().await;
}

#[tokio::test]
async fn scale_follows_up_and_down() {
    let kubectl = Kubectl::start("kubectl-scale").await;
    kubectl
        .ok(&["create", "deployment", "web", "--image=example/echo"])
        .await;
    kubectl.wait_for_pods(1).await;

    kubectl
        .ok(&["scale", "deployment", "web", "--replicas=3"])
        .await;
    kubectl.wait_for_pods(3).await;
    kubectl.rolled_out().await;
    let listed = kubectl.ok(&["get", "deployment", "web"]).await;
    assert!(listed.contains("3/3"), "{listed}");

    let refused = kubectl
        .run(&[
            "scale",
            "deployment",
            "web",
            "--replicas=1",
            "--current-replicas=2",
        ])
        .await
        .expect_err("the precondition does not hold");
    assert!(refused.contains("Expected replicas to be 2"), "{refused}");
    kubectl
        .ok(&[
            "scale",
            "deployment",
            "web",
            "--replicas=1",
            "--current-replicas=3",
        ])
        .await;
    kubectl.wait_for_pods(1).await;
    kubectl.rolled_out().await;
    let listed = kubectl.ok(&["get", "deployment", "web"]).await;
    assert!(listed.contains("1/1"), "{listed}");
    let scale = kubectl
        .ok(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ])
        .await;
    let scale: Value = serde_json::from_str(&scale).expect("a Scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
    kubectl.stop().await;
}

#[tokio::test]
async fn rollout_restart_then_undo() {
    let kubectl = Kubectl::start("kubectl-rollout").await;
    kubectl
        .ok(&[
            "create",
            "deployment",
            "web",
            "--image=example/echo",
            "--replicas=2",
        ])
        .await;
    let before = kubectl.wait_for_pods(2).await;
    kubectl.rolled_out().await;

    kubectl
        .ok(&["rollout", "restart", "deployment", "web"])
        .await;
    kubectl.rolled_out().await;
    let after = kubectl.wait_for_pods(2).await;
    assert!(
        before.is_disjoint(&after),
        "{before:?} were not replaced: {after:?}"
    );
    let sets = kubectl.replica_sets().await;
    let revisions: Vec<(&str, i64)> = sets.iter().map(|(r, n, _)| (r.as_str(), *n)).collect();
    assert_eq!(
        revisions,
        [("1", 0), ("2", 2)],
        "the old ReplicaSet is kept, scaled down"
    );
    let restarted = &sets[1].2["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(restarted.is_string(), "{:?}", sets[1].2);

    kubectl.ok(&["rollout", "undo", "deployment", "web"]).await;
    kubectl.rolled_out().await;
    let undone = kubectl.wait_for_pods(2).await;
    assert!(after.is_disjoint(&undone));
    let deployment = kubectl.get(&["deployment", "web"]).await;
    assert!(
        deployment["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("kubectl.kubernetes.io/restartedAt").is_none()),
        "the template before the restart is back: {}",
        deployment["spec"]["template"]
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    // The first ReplicaSet is re-adopted as revision 3; the restarted one is history.
    let sets = kubectl.replica_sets().await;
    let revisions: Vec<(&str, i64)> = sets.iter().map(|(r, n, _)| (r.as_str(), *n)).collect();
    assert_eq!(revisions, [("2", 0), ("3", 2)]);
    let history = kubectl
        .ok(&["rollout", "history", "deployment", "web"])
        .await;
    assert!(history.contains('2') && history.contains('3'), "{history}");
    kubectl.stop().await;
}

#[tokio::test]
async fn a_deleted_pod_is_replaced() {
    let kubectl = Kubectl::start("kubectl-delete").await;
    kubectl
        .ok(&["create", "deployment", "web", "--image=example/echo"])
        .await;
    let first = kubectl.wait_for_pods(1).await;
    let name = first.first().expect("a pod").clone();
    kubectl.ok(&["delete", "pod", &name]).await;
    let replaced = kubectl.wait_for_pods(1).await;
    assert!(!replaced.contains(&name), "{name} is gone, another runs");
    kubectl.stop().await;
}
