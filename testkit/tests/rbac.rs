//! Authentication and RBAC as kube-rs and kubectl meet them: a user bound to roles can do exactly
//! what they grant and gets a real API server's 403 otherwise; bad tokens get 401; the admin can
//! impersonate; `kubectl auth can-i` answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use cz_testkit::{Cluster, ClusterOptions};

/// How long `cz-testkit up` may take to start.
const START: Duration = Duration::from_secs(60);

/// A Role in `demo`: read Services, read the ConfigMap `settings` only.
fn dev_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "dev", "namespace": "demo"},
        "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]},
        ],
    })
}

/// The loopback cluster with the sample's objects (not waited for) and the ConfigMaps
/// `settings` and `other` in `demo`.
async fn start() -> (Cluster, Client) {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster starts");
    cluster.create_sample().expect("sample");
    let admin = client(cluster.kubeconfig()).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), "demo");
    for name in ["settings", "other"] {
        let configmap = serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
        configmaps
            .create(&PostParams::default(), &configmap)
            .await
            .expect("admin creates a ConfigMap");
    }
    (cluster, admin)
}

async fn client(kubeconfig: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// A client authenticating as `name`, bound to `roles`.
async fn user(cluster: &Cluster, name: &str, roles: &[Value]) -> Client {
    let token = cluster.add_user(name, roles).expect("user added");
    client(&cluster.user_kubeconfig(name, &token).expect("kubeconfig")).await
}

/// The API error's code, reason and message.
fn denied<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn forbidden(message: &str) -> (u16, String, String) {
    (403, "Forbidden".to_owned(), message.to_owned())
}

#[tokio::test]
async fn a_user_can_do_what_its_roles_grant_and_nothing_else() {
    let (cluster, admin) = start().await;
    let dev = user(&cluster, "dev", &[dev_role()]).await;
    let services: Api<Service> = Api::namespaced(dev.clone(), "demo");
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .expect("dev lists Services in demo")
            .items
            .len(),
        1
    );
    services.get("echo").await.expect("dev gets Service echo");
    let label = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
    assert_eq!(
        denied(
            services
                .patch("echo", &PatchParams::default(), &label)
                .await
        ),
        forbidden(
            r#"services "echo" is forbidden: User "dev" cannot patch resource "services" in API group "" in the namespace "demo""#
        )
    );
    assert_eq!(
        denied(services.get_status("echo").await),
        forbidden(
            r#"services "echo" is forbidden: User "dev" cannot get resource "services/status" in API group "" in the namespace "demo""#
        )
    );
    assert_eq!(
        denied(
            Api::<Service>::all(dev.clone())
                .list(&ListParams::default())
                .await
        ),
        forbidden(
            r#"services is forbidden: User "dev" cannot list resource "services" in API group "" at the cluster scope"#
        )
    );
    assert_eq!(
        denied(
            Api::<Service>::namespaced(dev.clone(), "default")
                .get("kubernetes")
                .await
        ),
        forbidden(
            r#"services "kubernetes" is forbidden: User "dev" cannot get resource "services" in API group "" in the namespace "default""#
        )
    );
    assert_eq!(
        denied(
            Api::<Deployment>::namespaced(dev.clone(), "demo")
                .list(&ListParams::default())
                .await
        ),
        forbidden(
            r#"deployments.apps is forbidden: User "dev" cannot list resource "deployments" in API group "apps" in the namespace "demo""#
        )
    );
    // resourceNames grant the named object only, and never a list.
    let configmaps: Api<ConfigMap> = Api::namespaced(dev.clone(), "demo");
    configmaps.get("settings").await.expect("dev gets settings");
    assert_eq!(
        denied(configmaps.get("other").await),
        forbidden(
            r#"configmaps "other" is forbidden: User "dev" cannot get resource "configmaps" in API group "" in the namespace "demo""#
        )
    );
    assert_eq!(denied(configmaps.list(&ListParams::default()).await).0, 403);

    // Rules are additive: a second Role bound to dev adds the patch.
    let patcher: Role = serde_json::from_value(json!({
        "metadata": {"name": "patcher"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), "demo")
        .create(&PostParams::default(), &patcher)
        .await
        .expect("admin creates a Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "dev-patcher"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dev"}],
        "roleRef": {"kind": "Role", "apiGroup": "rbac.authorization.k8s.io", "name": "patcher"},
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), "demo")
        .create(&PostParams::default(), &binding)
        .await
        .expect("admin binds it");
    let patched = services
        .patch("echo", &PatchParams::default(), &label)
        .await
        .expect("dev may patch now");
    assert_eq!(
        patched.metadata.labels.unwrap_or_default().get("touched"),
        Some(&"yes".to_owned())
    );
}

#[tokio::test]
async fn a_cluster_role_bound_in_a_namespace_grants_only_there() {
    let (cluster, admin) = start().await;
    let reader = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}],
    });
    // Bound cluster-wide to "ops": all namespaces.
    let ops = user(&cluster, "ops", &[reader]).await;
    Api::<Pod>::all(ops.clone())
        .list(&ListParams::default())
        .await
        .expect("ops lists pods everywhere");
    // Bound to "dev" by a RoleBinding in demo: demo only.
    let dev = user(&cluster, "dev", &[]).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "dev-pod-reader"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dev"}],
        "roleRef": {"kind": "ClusterRole", "apiGroup": "rbac.authorization.k8s.io", "name": "pod-reader"},
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin, "demo")
        .create(&PostParams::default(), &binding)
        .await
        .expect("admin binds the ClusterRole in demo");
    Api::<Pod>::namespaced(dev.clone(), "demo")
        .list(&ListParams::default())
        .await
        .expect("dev lists pods in demo");
    assert_eq!(
        denied(
            Api::<Pod>::namespaced(dev.clone(), "default")
                .list(&ListParams::default())
                .await
        ),
        forbidden(
            r#"pods is forbidden: User "dev" cannot list resource "pods" in API group "" in the namespace "default""#
        )
    );
    assert_eq!(
        denied(
            Api::<Pod>::all(dev.clone())
                .list(&ListParams::default())
                .await
        ),
        forbidden(
            r#"pods is forbidden: User "dev" cannot list resource "pods" in API group "" at the cluster scope"#
        )
    );
    assert_eq!(
        denied(
            Api::<ClusterRoleBinding>::all(dev)
                .list(&ListParams::default())
                .await
        ),
        forbidden(
            r#"clusterrolebindings.rbac.authorization.k8s.io is forbidden: User "dev" cannot list resource "clusterrolebindings" in API group "rbac.authorization.k8s.io" at the cluster scope"#
        )
    );
}

#[tokio::test]
async fn unknown_and_missing_tokens_get_401() {
    let (cluster, _admin) = start().await;
    let mut config: Value = serde_json::from_str(cluster.kubeconfig()).expect("kubeconfig");
    config["users"][0]["user"] = json!({"token": "not-a-token"});
    let unknown = client(&config.to_string()).await;
    let unauthorized = (401, "Unauthorized".to_owned(), "Unauthorized".to_owned());
    assert_eq!(
        denied(
            Api::<Service>::namespaced(unknown, "demo")
                .get("echo")
                .await
        ),
        unauthorized
    );
    config["users"][0]["user"] = json!({});
    let anonymous = client(&config.to_string()).await;
    assert_eq!(
        denied(
            Api::<Service>::namespaced(anonymous, "demo")
                .get("echo")
                .await
        ),
        unauthorized
    );
}

/// Runs kubectl with `kubeconfig`; its exit status, stdout and stderr.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl is installed (Debian package kubectl)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cz-testkit-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[tokio::test]
async fn kubectl_auth_can_i_and_impersonation() {
    let (cluster, admin) = start().await;
    let dir = scratch("rbac-kubectl");
    let token = cluster.add_user("dev", &[dev_role()]).expect("user");
    let dev = dir.join("dev");
    std::fs::write(
        &dev,
        cluster.user_kubeconfig("dev", &token).expect("kubeconfig"),
    )
    .expect("write");
    let admin_config = dir.join("admin");
    cluster.write_kubeconfig(&admin_config).expect("write");

    let (_, listing, _) = kubectl(&dev, &["auth", "can-i", "--list", "-n", "demo"]).await;
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["services", "[]", "[]", "[get", "list]"])
            && rows.contains(&vec!["configmaps", "[]", "[settings]", "[get]"])
            && !listing.contains("deployments"),
        "{listing}"
    );
    for (args, answer) in [
        (&["get", "services"][..], "yes"),
        (&["patch", "services"], "no"),
        (&["get", "configmaps/settings"], "yes"),
        (&["get", "configmaps/other"], "no"),
        (&["list", "deployments.apps"], "no"),
    ] {
        let (_, stdout, stderr) =
            kubectl(&dev, &[&["auth", "can-i"], args, &["-n", "demo"]].concat()).await;
        assert_eq!(stdout.trim(), answer, "can-i {args:?}: {stderr}");
    }

    // The admin acts as dev, and as dev in a group, without dev's kubeconfig.
    let (ok, _, stderr) = kubectl(
        &admin_config,
        &["--as", "dev", "get", "deploy", "-n", "demo"],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains(r#"Error from server (Forbidden): deployments.apps is forbidden: User "dev" cannot list resource "deployments" in API group "apps" in the namespace "demo""#),
        "{stderr}"
    );
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ops-deployments"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}],
        "roleRef": {"kind": "ClusterRole", "apiGroup": "rbac.authorization.k8s.io", "name": "deployment-reader"},
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("admin binds group ops");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "deployment-reader"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}]});
    let manifest = dir.join("role.json");
    std::fs::write(&manifest, role.to_string()).expect("write");
    let (ok, _, stderr) = kubectl(
        &admin_config,
        &["create", "-f", manifest.to_str().expect("path")],
    )
    .await;
    assert!(ok, "{stderr}");
    let (ok, listing, stderr) = kubectl(
        &admin_config,
        &[
            "--as",
            "dev",
            "--as-group",
            "ops",
            "get",
            "deploy",
            "-n",
            "demo",
        ],
    )
    .await;
    assert!(ok && listing.contains("echo"), "{stderr}");
    let (ok, whoami, stderr) = kubectl(
        &admin_config,
        &[
            "--as",
            "dev",
            "--as-group",
            "ops",
            "auth",
            "whoami",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let whoami: Value = serde_json::from_str(&whoami).expect("whoami prints JSON");
    assert_eq!(
        whoami["status"]["userInfo"],
        json!({"username": "dev", "groups": ["ops", "system:authenticated"]})
    );

    // dev may not impersonate anyone.
    let (ok, _, stderr) = kubectl(&dev, &["--as", "admin", "get", "svc", "-n", "demo"]).await;
    assert!(!ok);
    assert!(
        stderr.contains(r#"users "admin" is forbidden: User "dev" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn up_adds_users_from_role_files() {
    let dir = scratch("rbac-up");
    let roles = dir.join("reader.json");
    std::fs::write(
        &roles,
        json!({"kind": "List", "items": [{
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "namespace-reader"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}],
        }]})
        .to_string(),
    )
    .expect("write");
    let kubeconfig = dir.join("kubeconfig");
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
        .arg("up")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--user")
        .arg(format!("reader={}", roles.display()))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cz-testkit starts");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(START, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line == "ready" {
                return;
            }
            printed.push(line);
        }
        panic!("cz-testkit up ended before it was ready");
    })
    .await
    .expect("cz-testkit up is ready in time");
    assert!(
        printed.contains(&"user reader context reader".to_owned()),
        "{printed:?}"
    );

    let (ok, listing, stderr) = kubectl(&kubeconfig, &["--context", "reader", "get", "ns"]).await;
    assert!(ok && listing.contains("kube-system"), "{stderr}");
    let (ok, _, stderr) = kubectl(&kubeconfig, &["--context", "reader", "get", "pods", "-A"]).await;
    assert!(!ok);
    assert!(
        stderr.contains(r#"pods is forbidden: User "reader" cannot list resource "pods" in API group "" at the cluster scope"#),
        "{stderr}"
    );
    // The current context stays the admin's.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["get", "pods", "-A"]).await;
    assert!(ok, "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn up_refuses_role_files_it_cannot_use() {
    let dir = scratch("rbac-bad");
    let no_namespace = dir.join("no-namespace.json");
    std::fs::write(
        &no_namespace,
        json!({"kind": "Role", "metadata": {"name": "dev"}, "rules": []}).to_string(),
    )
    .expect("write");
    let not_json = dir.join("role.yaml");
    std::fs::write(&not_json, "kind: Role\n").expect("write");
    for (file, expected) in [
        (dir.join("missing.json"), "could not read the role file"),
        (not_json, "is not JSON (write it with `kubectl create role"),
        (
            no_namespace,
            r#"binding user "dev": Role "dev" has no metadata.namespace"#,
        ),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cz-testkit"))
            .arg("up")
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .arg("--user")
            .arg(format!("dev={}", file.display()))
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(START, output)
            .await
            .expect("cz-testkit up exits in time")
            .expect("cz-testkit runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file:?} accepted");
        assert!(stderr.contains(expected), "{file:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The status of a port-forward to the pod `nope` in `demo` (which does not exist).
async fn port_forward_status(client: &Client) -> u16 {
    match Api::<Pod>::namespaced(client.clone(), "demo")
        .portforward("nope", &[80])
        .await
    {
        Err(kube::Error::Api(status)) => status.code,
        Err(kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(status),
        )) => status.as_u16(),
        other => panic!("expected a refused upgrade, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_websocket_port_forward_needs_get_and_create_as_on_kubernetes_1_35() {
    let (cluster, _admin) = start().await;
    for (user_name, verbs, status) in [
        ("only-get", json!(["get"]), 403),
        ("only-create", json!(["create"]), 403),
        ("both", json!(["get", "create"]), 404),
    ] {
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("forward-{user_name}"), "namespace": "demo"},
            "rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}],
        });
        let client = user(&cluster, user_name, &[role]).await;
        assert_eq!(
            port_forward_status(&client).await,
            status,
            "pods/portforward {verbs}: 403 unless both, else past RBAC to the missing pod"
        );
    }
}
