//! The loopback cluster through the clients that use it: kube-rs (as czctl does) and kubectl.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cz_testkit::{Cluster, ClusterOptions};

/// How long the cluster may take to converge.
const CONVERGE: Duration = Duration::from_secs(30);
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(sample: bool) -> (Cluster, Client) {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("cluster starts");
    if sample {
        cluster.create_sample().expect("sample");
        cluster
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("sample ready");
    }
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    (cluster, client)
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("not an API error: {other}"),
    }
}

/// Which pod answers a request on `connection`.
async fn answered_by(connection: std::io::Result<tokio::net::TcpStream>) -> Option<String> {
    let mut stream = connection.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    let body = reply.split("\r\n\r\n").nth(1)?;
    let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    json["pod"].as_str().map(str::to_owned)
}

fn cluster_ip_address(service: &Service, port: u16) -> SocketAddr {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("a ClusterIP");
    SocketAddr::new(ip, port)
}

/// Where `service`'s NodePort for `port` listens on the host.
fn node_port_address(service: &Service, port: i32) -> SocketAddr {
    let node_port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port))
        .and_then(|p| p.node_port)
        .expect("a NodePort");
    SocketAddr::from(([127, 0, 0, 1], node_port as u16))
}

#[tokio::test]
async fn writes_need_the_current_resource_version() {
    let (_cluster, client) = start(false).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut created = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))
                .expect("object"),
        )
        .await
        .expect("created");
    let stale = created.clone();
    created.data = Some([("a".to_owned(), "2".to_owned())].into());
    let updated = maps
        .replace("cfg", &PostParams::default(), &created)
        .await
        .expect("replace with the current version");
    assert_ne!(
        updated.metadata.resource_version,
        stale.metadata.resource_version
    );
    let (code, reason) = api_error(
        maps.replace("cfg", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(updated.metadata.uid, stale.metadata.uid);
    assert!(updated.metadata.creation_timestamp.is_some());
}

#[tokio::test]
async fn errors_carry_the_real_reasons() {
    let (_cluster, client) = start(false).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let (code, reason) = api_error(services.get("missing").await.expect_err("missing"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let service = |name: &str, port_name: &str| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"selector": {"app": "x"}, "ports": [{"name": port_name, "port": 80}]}})).expect("object")
    };
    services
        .create(&PostParams::default(), &service("web", "http"))
        .await
        .expect("created");
    let (code, reason) = api_error(
        services
            .create(&PostParams::default(), &service("web", "http"))
            .await
            .expect_err("twice"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let (code, reason) = api_error(
        services
            .create(
                &PostParams::default(),
                &service("long", "much-too-long-port-name"),
            )
            .await
            .expect_err("invalid"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let (code, _) = api_error(
        services
            .create(&PostParams::default(), &service("Bad_Name", "http"))
            .await
            .expect_err("invalid"),
    );
    assert_eq!(code, 422);
    let elsewhere: Api<Service> = Api::namespaced(client, "nowhere");
    let (code, _) = api_error(
        elsewhere
            .create(&PostParams::default(), &service("web", "http"))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn patches_merge_json_with_test_and_strategic() {
    let (_cluster, client) = start(false).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web", "annotations": {"keep": "me"}}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]}})).expect("object");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    let params = PatchParams::default();
    services
        .patch(
            "web",
            &params,
            &Patch::Merge(json!({"metadata": {"annotations": {"added": "1"}}})),
        )
        .await
        .expect("merge");
    let guarded = |expected: &str| {
        Patch::<()>::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": "/spec/selector", "value": {"app": expected}},
                {"op": "replace", "path": "/spec/selector", "value": {"app": "proxy"}},
            ]))
            .expect("patch"),
        )
    };
    let (code, _) = api_error(
        services
            .patch("web", &params, &guarded("someone-else"))
            .await
            .expect_err("test fails"),
    );
    assert_eq!(code, 422);
    services
        .patch("web", &params, &guarded("web"))
        .await
        .expect("test passes");
    let patched = services
        .patch(
            "web",
            &params,
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 80, "name": "web"}]}})),
        )
        .await
        .expect("strategic");
    let spec = patched.spec.expect("spec");
    assert_eq!(
        spec.selector,
        Some([("app".to_owned(), "proxy".to_owned())].into())
    );
    assert_eq!(spec.ports.expect("ports")[0].name.as_deref(), Some("web"));
    let annotations = patched.metadata.annotations.expect("annotations");
    assert_eq!(
        (annotations["keep"].as_str(), annotations["added"].as_str()),
        ("me", "1")
    );
}

#[tokio::test]
async fn watches_resume_from_a_resource_version() {
    let (_cluster, client) = start(false).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let object = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": "a"}}}))
            .expect("object")
    };
    let first = maps
        .create(&PostParams::default(), &object("first"))
        .await
        .expect("created");
    let after_first = first.metadata.resource_version.clone().expect("rv");
    maps.create(&PostParams::default(), &object("second"))
        .await
        .expect("created");
    maps.delete("first", &DeleteParams::default())
        .await
        .expect("deleted");

    // Resuming after `first` replays exactly what happened since, in order.
    let stream = maps
        .watch(
            &WatchParams::default().labels("team=a").timeout(5),
            &after_first,
        )
        .await
        .expect("watch");
    let events: Vec<_> = stream.take(2).try_collect().await.expect("events");
    let seen: Vec<String> = events
        .iter()
        .map(|event| match event {
            WatchEvent::Added(cm) => {
                format!("added {}", cm.metadata.name.as_deref().unwrap_or_default())
            }
            WatchEvent::Deleted(cm) => format!(
                "deleted {}",
                cm.metadata.name.as_deref().unwrap_or_default()
            ),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(seen, ["added second", "deleted first"]);

    let list = maps.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn a_node_port_reaches_the_pods_and_follows_a_selector_change() {
    let (cluster, client) = start(true).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "demo");
    let address = node_port_address(&services.get("echo").await.expect("service"), 80);
    let pod = answered_by(TcpStream::connect(address).await)
        .await
        .expect("an echo pod answers on the host's 127.0.0.1");
    assert!(pod.starts_with("echo-"), "{pod}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "demo");
    let other: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "other"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}}, "template": {
            "metadata": {"labels": {"app": "other"}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo:1.0", "ports": [{"name": "http", "containerPort": 8080}]}]},
        }},
    })).expect("object");
    deployments
        .create(&PostParams::default(), &other)
        .await
        .expect("created");
    cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    services
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "other"}}})),
        )
        .await
        .expect("patched");
    cz_testkit::eventually(
        "new connections to reach the other pod",
        CONVERGE,
        || async {
            answered_by(TcpStream::connect(address).await)
                .await
                .filter(|pod| pod.starts_with("other-"))
        },
    )
    .await;

    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(client, "demo");
    cz_testkit::eventually("the endpoints to follow the selector", CONVERGE, || async {
        let subsets = endpoints.get("echo").await.ok()?.subsets?;
        let addresses = subsets.first()?.addresses.clone()?;
        let target = addresses.first()?.target_ref.clone()?.name?;
        (addresses.len() == 1 && target.starts_with("other-")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_deployment_collects_what_it_owns() {
    let (cluster, client) = start(true).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "demo");
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .len(),
        2
    );
    let deployments: Api<Deployment> = Api::namespaced(client, "demo");
    deployments
        .delete("echo", &DeleteParams::default())
        .await
        .expect("deleted");
    assert!(replica_sets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    assert!(pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    drop(cluster);
}

#[tokio::test]
async fn orphaned_dependents_stay() {
    let (_cluster, client) = start(true).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "demo");
    deployments
        .delete("echo", &DeleteParams::orphan())
        .await
        .expect("deleted");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client, "demo");
    let remaining = replica_sets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(remaining.len(), 1);
    assert!(remaining[0]
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents_of_any_kind_and_theirs() {
    let (_cluster, client) = start(false).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let owner_of = |object: &Service| json!([{"apiVersion": "v1", "kind": "Service", "name": object.metadata.name, "uid": object.metadata.uid}]);
    let service = |name: &str, owners: serde_json::Value| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": owners},
            "spec": {"ports": [{"port": 80}]},
        }))
        .expect("a Service")
    };
    let post = PostParams::default();
    let intercepted = services
        .create(&post, &service("web", json!([])))
        .await
        .expect("the owner");
    let shadow = services
        .create(&post, &service("web-shadow", owner_of(&intercepted)))
        .await
        .expect("a Service owned by a Service");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "web-certs", "ownerReferences": owner_of(&shadow)}}),
    )
    .expect("a Secret");
    secrets
        .create(&post, &secret)
        .await
        .expect("a Secret owned by the owned Service");
    let unrelated: Secret =
        serde_json::from_value(json!({"metadata": {"name": "unrelated"}})).expect("a Secret");
    secrets.create(&post, &unrelated).await.expect("unrelated");

    services
        .delete("web", &DeleteParams::background())
        .await
        .expect("owner deleted");
    for (what, holds) in [
        (
            "the owned Service is gone",
            services.get_opt("web-shadow").await.expect("get").is_none(),
        ),
        (
            "the Secret its dependent owned is gone",
            secrets.get_opt("web-certs").await.expect("get").is_none(),
        ),
        (
            "a Secret nobody owns is kept",
            secrets.get_opt("unrelated").await.expect("get").is_some(),
        ),
    ] {
        assert!(holds, "{what}");
    }
}

#[tokio::test]
async fn port_forward_reaches_a_pod() {
    let (_cluster, client) = start(true).await;
    let pods: Api<Pod> = Api::namespaced(client, "demo");
    let name = pods.list(&ListParams::default()).await.expect("pods").items[0]
        .metadata
        .name
        .clone()
        .expect("name");
    let mut forwarder = pods
        .portforward(&name, &[8080])
        .await
        .expect("port-forward");
    let mut stream = forwarder.take_stream(8080).expect("stream");
    stream
        .write_all(b"GET /through-port-forward HTTP/1.1\r\nhost: pod\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains(&format!("\"pod\":\"{name}\"")) && reply.contains("/through-port-forward"),
        "{reply}"
    );
}

#[tokio::test]
async fn unknown_images_back_off_with_an_event() {
    let (_cluster, client) = start(false).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "lost"}, "spec": {"containers": [{"name": "app", "image": "registry.example/nope:1"}]}})).expect("object");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("created");
    let reason = cz_testkit::eventually("ImagePullBackOff", CONVERGE, || async {
        let pod = pods.get("lost").await.ok()?;
        let waiting = pod
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?;
        waiting.reason.filter(|r| r == "ImagePullBackOff")
    })
    .await;
    assert_eq!(reason, "ImagePullBackOff");
    let events: Api<Event> = Api::namespaced(client, "default");
    let events = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Failed")
        && e.message
            .as_deref()
            .is_some_and(|m| m.contains("registry.example/nope:1"))));
}

/// A `cz-proxy` Deployment, its certificates from the Secret `secret` (none: missing).
fn proxy_deployment(name: &str, secret: Option<&str>) -> Deployment {
    let volumes = secret.map_or(
        json!([]),
        |secret| json!([{"name": "tls", "secret": {"secretName": secret}}]),
    );
    let mounts = secret.map_or(
        json!([]),
        |_| json!([{"name": "tls", "mountPath": "/etc/cz-proxy/tls"}]),
    );
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [{"name": "proxy", "image": "ghcr.io/czctl/cz-proxy:0.1.0",
                    "args": ["--http-port=8080", "--upstream=127.0.0.1:1", "--admin-port=9901", "--tls-dir=/etc/cz-proxy/tls"],
                    "volumeMounts": mounts,
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9901}, "periodSeconds": 1}}],
                "volumes": volumes,
            },
        }},
    }))
    .expect("a Deployment")
}

#[tokio::test]
async fn proxy_images_run_cz_proxy_and_failed_pods_are_replaced() {
    let (cluster, client) = start(false).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // With its certificates in a Secret volume, the pod runs the real cz-proxy: ready, serving
    // its metrics on the pod IP.
    support::proxy_secret(&client, "default").await;
    deployments
        .create(
            &PostParams::default(),
            &proxy_deployment("proxy", Some("proxy-tls")),
        )
        .await
        .expect("created");
    let ip = cz_testkit::eventually("the proxy pod to be ready", CONVERGE, || async {
        let pod = pods
            .list(&ListParams::default().labels("app=proxy"))
            .await
            .ok()?
            .items
            .pop()?;
        let status = pod.status?;
        status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(status.pod_ip)?
    })
    .await;
    let ip: std::net::IpAddr = ip.parse().expect("a pod IP");
    let mut admin = cluster
        .connect_inside(SocketAddr::new(ip, 9901))
        .await
        .expect("the proxy's admin port on the pod IP, from inside the cluster");
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut metrics = String::new();
    tokio::time::timeout(CONVERGE, admin.read_to_string(&mut metrics))
        .await
        .expect("the metrics arrive in time")
        .expect("read");
    assert!(
        metrics.contains("cz_proxy_tunnel_connected 0"),
        "cz-proxy's metrics: {metrics}"
    );

    // Without them, cz-proxy exits with an error: the pod fails and is replaced.
    deployments
        .create(&PostParams::default(), &proxy_deployment("broken", None))
        .await
        .expect("created");
    let broken = ListParams::default().labels("app=broken");
    let (first, code) = cz_testkit::eventually("the broken proxy to exit", CONVERGE, || async {
        let pod = pods.list(&broken).await.ok()?.items.pop()?;
        let code = pod
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .terminated?
            .exit_code;
        Some((pod.metadata.name?, code))
    })
    .await;
    assert_ne!(code, 0, "cz-proxy without certificates exits with an error");
    cz_testkit::eventually("the failed pod to be replaced", CONVERGE, || async {
        let items = pods.list(&broken).await.ok()?.items;
        items
            .iter()
            .any(|p| p.metadata.name.as_deref() != Some(first.as_str()))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn services_follow_endpoint_changes_only_after_the_lag() {
    const LAG: Duration = Duration::from_secs(3);
    let cluster = Cluster::start(ClusterOptions {
        endpoint_lag: LAG,
        ..Default::default()
    })
    .await
    .expect("cluster starts");
    cluster.create_sample().expect("sample");
    let canary = json!({
        "metadata": {"name": "canary"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "canary"}}, "template": {
            "metadata": {"labels": {"app": "canary"}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo", "ports": [{"name": "http", "containerPort": 8080}]}]},
        }},
    });
    cluster
        .store()
        .create(&cz_testkit::resources::DEPLOYMENTS, "demo", canary)
        .expect("canary created");
    cluster
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready, and Services forwarding to the ready pods");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(cluster.kubeconfig()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let services: Api<Service> = Api::namespaced(client, "demo");
    let address = cluster_ip_address(&services.get("echo").await.expect("service"), 80);
    let pod = answered_by(cluster.connect_inside(address).await)
        .await
        .expect("an echo pod answers");
    assert!(pod.starts_with("echo-"), "{pod}");

    let changed = tokio::time::Instant::now();
    services
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "canary"}}})),
        )
        .await
        .expect("patched");
    // Right after the change, new connections still go to the old pods, as with kube-proxy...
    let pod = answered_by(cluster.connect_inside(address).await)
        .await
        .expect("an echo pod answers");
    assert!(pod.starts_with("echo-"), "{pod}");
    // ... until the lag has passed.
    cz_testkit::eventually("new connections to reach the canary", CONVERGE, || async {
        answered_by(cluster.connect_inside(address).await)
            .await
            .filter(|pod| pod.starts_with("canary-"))
    })
    .await;
    assert!(
        changed.elapsed() >= LAG,
        "switched after {:?}, before the lag",
        changed.elapsed()
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410() {
    let (cluster, client) = start(false).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "counter"}})).expect("object"),
        )
        .await
        .expect("created");
    let oldest = created.metadata.resource_version.expect("rv");
    // More changes than the stand-in keeps (10,000), written behind the API for speed.
    for n in 0..10_001 {
        cluster
            .store()
            .update(
                &cz_testkit::resources::CONFIGMAPS,
                "default",
                "counter",
                false,
                |cm| cm["data"] = json!({"n": n.to_string()}),
            )
            .expect("updated");
    }
    let recent = maps
        .get("counter")
        .await
        .expect("get")
        .metadata
        .resource_version
        .expect("rv");
    let first_event = |version: String| {
        let maps = maps.clone();
        async move {
            let stream = maps
                .watch(&WatchParams::default().timeout(5), &version)
                .await;
            match stream {
                Err(error) => Err(api_error(error)),
                Ok(stream) => {
                    let mut stream = Box::pin(stream);
                    Ok(tokio::time::timeout(CONVERGE, stream.next())
                        .await
                        .expect("a watch event or the end in time"))
                }
            }
        }
    };
    let expired = match first_event(oldest).await {
        Err((code, _)) => code,
        Ok(Some(Ok(WatchEvent::Error(status)))) => status.code,
        other => panic!("a watch from a compacted version must fail with 410: {other:?}"),
    };
    assert_eq!(expired, 410);
    // A recent version still resumes.
    maps.patch(
        "counter",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "last"}})),
    )
    .await
    .expect("patched");
    match first_event(recent).await {
        Ok(Some(Ok(WatchEvent::Modified(cm)))) => {
            assert_eq!(cm.data.unwrap_or_default()["n"], "last")
        }
        other => panic!("a watch from a recent version resumes: {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_works_against_it() {
    let (cluster, _client) = start(true).await;
    let dir = std::env::temp_dir().join(format!("cz-testkit-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let kubectl = |args: &[&str]| {
        let kubeconfig = kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let output = tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .output()
                .await
                .expect("kubectl is installed (Debian package kubectl)");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        }
    };
    let listing = kubectl(&["get", "svc,deploy,pods", "-n", "demo"]).await;
    assert!(
        listing.contains("service/echo")
            && listing.contains("deployment.apps/echo")
            && listing.contains("Running"),
        "{listing}"
    );
    let service: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "svc", "echo", "-n", "demo", "-o", "json"]).await)
            .expect("json");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    kubectl(&[
        "patch",
        "svc",
        "echo",
        "-n",
        "demo",
        "-p",
        r#"{"metadata":{"labels":{"patched":"yes"}}}"#,
    ])
    .await;
    assert!(
        kubectl(&["get", "svc", "echo", "-n", "demo", "--show-labels"])
            .await
            .contains("patched=yes")
    );
    let manifest = dir.join("cm.json");
    for color in ["blue", "green"] {
        std::fs::write(&manifest, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "demo"}, "data": {"color": color}}).to_string()).expect("write");
        kubectl(&["apply", "-f", manifest.to_str().expect("path")]).await;
    }
    assert_eq!(
        kubectl(&[
            "get",
            "cm",
            "settings",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.color}"
        ])
        .await,
        "green"
    );
    kubectl(&["delete", "cm", "settings", "-n", "demo"]).await;
    assert!(!kubectl(&["get", "cm", "-n", "demo"])
        .await
        .contains("settings"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn udp_service_ports_reach_a_pod() {
    let (cluster, client) = start(false).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let dns: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "dns"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "dns"}}, "template": {
            "metadata": {"labels": {"app": "dns"}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo", "ports": [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
        }},
    })).expect("object");
    deployments
        .create(&PostParams::default(), &dns)
        .await
        .expect("created");
    let services: Api<Service> = Api::namespaced(client, "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "dns"},
        "spec": {"selector": {"app": "dns"}, "ports": [{"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]},
    })).expect("object");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    cluster.wait_ready(CONVERGE).await.expect("ready");
    let address = cluster_ip_address(&service, 53);
    let socket = cluster
        .udp_socket_inside()
        .expect("a UDP socket in the cluster");
    let reply = cz_testkit::eventually("a UDP answer", CONVERGE, || async {
        socket.send_to(b"ping", address).await.ok()?;
        let mut buf = [0; 256];
        let len = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    })
    .await;
    assert!(
        reply.starts_with("dns-") && reply.ends_with(": ping"),
        "{reply}"
    );
}
