//! `czctl service intercept` end to end, as users run it: the real `czctl` binary against the
//! loopback cluster (whose Services follow endpoint changes a second late, as kube-proxy does),
//! with concurrent traffic flowing through the Service before, during and after.

mod carrier;
mod cleanup;
mod dry_run;
mod inspector;
mod keep_alive;
mod rbac;
mod support;
mod team;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use support::http::{answered_by, connect, get, who, LaptopApp, HELD_BODY, INTERCEPT};
use support::load::{Connections, Load};
use support::{Czctl, Setup, CZCTL_DEADLINE, NAMESPACE};

/// How long a request held by the laptop app must stay in flight while czctl stops.
const HELD_GRACE: Duration = Duration::from_secs(5);

/// Where each of `wanted` first appears in `lines`; fails naming the missing one.
fn positions(lines: &[String], wanted: &[&str]) -> Vec<usize> {
    wanted
        .iter()
        .map(|w| {
            lines
                .iter()
                .position(|l| l.contains(w))
                .unwrap_or_else(|| panic!("czctl never printed {w:?}: {lines:#?}"))
        })
        .collect()
}

/// The session's Secret holds the proxy's certificate and key and the CA certificate: one private
/// key, the proxy's own, never the CA's; and it is owned by the shadow Service, which takes it along.
async fn assert_secret_holds_no_ca_key(setup: &Setup) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let secrets = Api::<Secret>::namespaced(setup.client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=czctl"))
        .await
        .expect("list Secrets")
        .items;
    assert_eq!(secrets.len(), 1, "one session Secret");
    let owners = secrets[0]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(
        owners.len() == 1
            && owners[0].kind == "Service"
            && owners[0].name.starts_with("cz-shadow-echo-"),
        "the Secret is owned by the shadow Service, so it goes with it: {owners:?}"
    );
    let data = secrets[0].data.clone().expect("the Secret has data");
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("PEM text");
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    let private_keys: usize = data
        .values()
        .map(|v| {
            String::from_utf8_lossy(&v.0)
                .matches("PRIVATE KEY-----")
                .count()
        })
        .sum();
    assert_eq!(private_keys, 2, "one private key (BEGIN and END lines)");
    let key = rcgen::KeyPair::from_pem(&text("tls.key")).expect("tls.key is a key");
    let public_key = rcgen::PublicKeyData::subject_public_key_info(&key);
    let holds = |pem: String| {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate");
        der.windows(public_key.len()).any(|w| w == public_key)
    };
    assert!(
        holds(text("tls.crt")),
        "tls.key is the proxy certificate's key"
    );
    assert!(!holds(text("ca.crt")), "tls.key is not the CA's key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_routes_by_header_and_restores_everything_without_dropping_requests() {
    let setup = Setup::start().await;
    setup.annotate_service().await;
    let before = setup.service_state().await;
    let mut laptop = LaptopApp::start(0).await;
    let mut load = Load::start(&setup.service_address);

    let mut czctl = setup.intercept(laptop.port, &[]).await;
    assert!(
        czctl.seen.iter().any(|l| l.contains("proxy ready")),
        "{:?}",
        czctl.seen
    );
    let address = setup.service_address.clone();
    // Once czctl says it intercepts, it does, even on a cluster whose Services lag.
    assert_eq!(
        answered_by(&address, Some(INTERCEPT)).await.as_deref(),
        Ok("laptop"),
        "the first request with the header after the summary line"
    );
    // Keep-alive connections made now go through the proxy and stay there until it goes away.
    load.add("through the proxy, no header", false, Connections::Kept);
    load.add("through the proxy, header", true, Connections::Kept);
    let pod = answered_by(&address, None).await.expect("an answer");
    assert!(pod.starts_with("echo-"), "without the header: {pod}");
    // The Service's other port passes through the proxy to the pods, header or not.
    let metrics = address.replace(":80", ":9090");
    let pod = answered_by(&metrics, Some(INTERCEPT))
        .await
        .expect("an answer");
    assert!(pod.starts_with("echo-"), "other port: {pod}");
    assert_secret_holds_no_ca_key(&setup).await;

    let (ok, listing, stderr) = setup.run(&["session", "list", "-A"]).await;
    let row = listing
        .lines()
        .find(|l| l.starts_with("demo/echo"))
        .unwrap_or_else(|| panic!("no demo/echo in {listing}{stderr}"));
    assert!(ok && row.contains(" connected"), "{listing}");

    // Someone else labels the Service meanwhile: that change must survive the restore.
    setup
        .services()
        .patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .expect("label the Service");
    let proxy_ip = setup.proxy_pods().await[0]
        .status
        .clone()
        .and_then(|s| s.pod_ip)
        .expect("the proxy pod's IP");
    let proxy_admin = format!("{proxy_ip}:9901");

    // An intercepted request in flight when czctl is stopped.
    let held = tokio::spawn({
        let address = address.clone();
        async move {
            let mut sender = connect(&address).await?;
            let (status, body) = get(&mut sender, "/hold", Some(INTERCEPT), true)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((who(status, &body)?, body.len()))
        }
    });
    tokio::time::timeout(CZCTL_DEADLINE, laptop.held_rx.recv())
        .await
        .expect("the held request reaches the laptop")
        .expect("the laptop app runs");

    czctl.signal("TERM");
    czctl.read_until("deleted proxy deployment").await;
    // The proxy is going away; czctl must keep the tunnel open for the request: it does not end
    // before the laptop answers (a czctl that closed the tunnel fails it within this time).
    let mut held = held;
    if let Ok(ended) = tokio::time::timeout(HELD_GRACE, &mut held).await {
        panic!("the request in flight ended before the laptop answered: {ended:?}");
    }
    laptop.release();
    let (by, length) = tokio::time::timeout(CZCTL_DEADLINE, held)
        .await
        .expect("the held request is answered")
        .expect("the held request's task")
        .expect("the request in flight at the stop completes");
    assert_eq!(by, "laptop");
    assert!(
        length > HELD_BODY,
        "the whole body arrived ({length} bytes)"
    );

    let seen = czctl.seen.clone();
    let (ok, rest, stderr) = czctl.finish().await;
    assert!(ok, "czctl exits 0 after SIGTERM: {stderr}");
    let output: Vec<String> = seen
        .into_iter()
        .skip_while(|l| !l.starts_with("Intercepting"))
        .chain(rest)
        .collect();
    let order = positions(
        &output,
        &[
            "stopping: restoring the service first",
            "service selector restored",
            "deleted proxy deployment",
            "deleted shadow service",
            "goes with its owner shadow service",
            "intercept of demo/echo ended; the service is restored",
        ],
    );
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "restore first, then delete: {output:#?}"
    );
    // czctl returns only once new connections reach the pods again.
    let pod = answered_by(&address, Some(INTERCEPT))
        .await
        .expect("an answer");
    assert!(pod.starts_with("echo-"), "after the stop: {pod}");

    let tallies = load.finish().await;
    for (name, tally) in &tallies {
        assert!(
            tally.failures.is_empty() && tally.answered > 0,
            "{name}: {} answered, {} failed: {:?}",
            tally.answered,
            tally.failures.len(),
            tally.failures
        );
    }
    assert!(
        tallies
            .iter()
            .filter(|(name, _)| name.ends_with(", header"))
            .all(|(_, tally)| tally.by_laptop > 0),
        "the load's requests with the header reached the laptop: {tallies:?}"
    );
    assert!(
        tallies
            .iter()
            .filter(|(name, _)| name.starts_with("through the proxy"))
            .all(|(_, tally)| tally.resent > 0),
        "the connections through the proxy were in use until it closed them: {tallies:?}"
    );

    let mut expected = before;
    expected["labels"]["team"] = json!("payments");
    assert_eq!(
        setup.service_state().await,
        expected,
        "the Service is exactly as before (its own annotations too), plus the other change"
    );
    cz_testkit::eventually("the proxy process to stop", CZCTL_DEADLINE, || async {
        tokio::net::TcpStream::connect(&proxy_admin)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    setup.no_leftovers("after czctl stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_is_cleaned_up_and_shown() {
    let setup = Setup::start().await;
    setup.annotate_service().await;
    let before = setup.service_state().await;
    let laptop = LaptopApp::start(0).await;
    let port = laptop.port.to_string();
    let intercept = support::intercept_args(&port, &[]);
    let crash_at = |line: &'static str| {
        let mut czctl = Czctl::spawn(setup.czctl(&intercept));
        async move {
            czctl.read_until(line).await;
            czctl.signal("KILL");
            let (ok, _, _) = czctl.finish().await;
            assert!(!ok, "SIGKILL ends czctl");
        }
    };

    // Killed after creating the shadow Service: objects are left, the Service is untouched.
    crash_at("created shadow service").await;
    assert!(
        !setup.leftovers().await.is_empty(),
        "the crash left objects behind"
    );
    assert_eq!(setup.service_state().await, before);
    let (ok, _, stderr) = setup.run(&["session", "close", "-n", NAMESPACE]).await;
    assert!(ok, "{stderr}");
    setup.no_leftovers("after session close").await;
    assert_eq!(setup.service_state().await, before);

    // Killed right after switching the selector: the Service points at the proxy.
    crash_at("service now routes through the proxy").await;
    assert_ne!(
        setup.selector().await,
        before["spec"]["selector"]
            .as_object()
            .expect("a selector")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect::<BTreeMap<_, _>>(),
        "the crash left the Service switched"
    );
    let (ok, stdout, stderr) = setup.run(&["session", "close", "-n", NAMESPACE]).await;
    assert!(
        ok && stdout.contains("service selector restored"),
        "{stdout}{stderr}"
    );
    setup.no_leftovers("after session close").await;
    assert_eq!(
        setup.service_state().await,
        before,
        "restored exactly, the Service's own annotations kept"
    );

    // Killed while intercepting: the next user is told who intercepts, since when, and how to
    // clean up; `session list` shows the laptop gone.
    let started = std::time::SystemTime::now();
    let mut command = setup.czctl(&intercept);
    command.env("USER", "crash-tester");
    let mut czctl = Czctl::spawn(command);
    czctl.read_until("Intercepting").await;
    czctl.signal("KILL");
    let _ = czctl.finish().await;
    let (ok, _, stderr) = setup.run(&intercept).await;
    assert!(
        !ok && stderr
            .contains("already intercepted with the header x-c6o-intercept:yes by crash-tester@")
            && stderr.contains("czctl service intercept echo -n demo --clean --session "),
        "{stderr}"
    );
    let since = stderr
        .split(" since ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|since| humantime::parse_rfc3339(since).ok())
        .unwrap_or_else(|| panic!("no start time in {stderr}"));
    let skew = Duration::from_secs(2);
    assert!(
        since + skew >= started && since <= std::time::SystemTime::now(),
        "since {since:?}, started {started:?}"
    );
    wait_for_disconnected_listing(&setup).await;

    // Another user's session is closed only when named.
    let session = stderr
        .split("(session ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no session id in {stderr}"));
    let (ok, stdout, stderr) = setup
        .run(&["service", "intercept", "echo", "-n", NAMESPACE, "--clean"])
        .await;
    assert!(
        ok && stdout.contains("0 session(s) closed"),
        "{stdout}{stderr}"
    );
    assert_ne!(
        setup.service_state().await,
        before,
        "crash-tester's session is not ours"
    );
    let (ok, stdout, stderr) = setup
        .run(&[
            "service",
            "intercept",
            "echo",
            "-n",
            NAMESPACE,
            "--clean",
            "--session",
            session,
        ])
        .await;
    assert!(
        ok && stdout.contains("service selector restored"),
        "{stdout}{stderr}"
    );
    assert_eq!(setup.service_state().await, before);
    setup.no_leftovers("after --clean").await;
    // Once the Service's forwarding follows the restored endpoints (kube-proxy's lag; the old
    // proxy serves meanwhile, for its shutdown delay).
    let address = setup.service_address.clone();
    cz_testkit::eventually("traffic back on the pods", CZCTL_DEADLINE, || async {
        let pod = answered_by(&address, Some(INTERCEPT)).await.ok()?;
        pod.starts_with("echo-").then_some(())
    })
    .await;

    // Both are idempotent: nothing left is fine. (--quiet prints nothing but errors.)
    let (ok, stdout, stderr) = setup.run(&support::sample_args(&["--clean", "-q"])).await;
    assert!(ok && stdout.is_empty(), "{stdout}{stderr}");
    let (ok, stdout, stderr) = setup.run(&["session", "close", "-A"]).await;
    assert!(
        ok && stdout.contains("0 session(s) closed"),
        "{stdout}{stderr}"
    );
}

/// Polls `czctl session list` (every 2 s: the proxy notices a killed laptop at the tunnel's idle
/// timeout) until demo/echo shows no laptop connected.
async fn wait_for_disconnected_listing(setup: &Setup) {
    let deadline = tokio::time::Instant::now() + CZCTL_DEADLINE;
    let mut listing = String::new();
    while tokio::time::Instant::now() < deadline {
        let (ok, stdout, stderr) = setup.run(&["session", "list", "-n", NAMESPACE]).await;
        assert!(ok, "{stderr}");
        listing = stdout;
        let row = listing.lines().find(|l| l.starts_with("demo/echo"));
        let row = row.unwrap_or_else(|| panic!("the session is listed: {listing}"));
        assert!(
            row.contains("crash-tester@"),
            "the owner is listed: {listing}"
        );
        if row.contains(" disconnected ") {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("session list never showed the killed laptop as disconnected: {listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_and_interruptions_get_clear_errors_and_change_nothing() {
    let setup = Setup::start().await;
    let before = setup.service_state().await;
    let (ok, _, stderr) = setup
        .run(&["service", "intercept", "ecoh", "-n", "demo"])
        .await;
    assert!(
        !ok && stderr.contains("service \"ecoh\" not found in namespace \"demo\"")
            && stderr.contains("closest first: echo"),
        "{stderr}"
    );
    let (ok, _, stderr) = setup
        .run(&["service", "intercept", "echo", "-n", "demo"])
        .await;
    assert!(
        !ok && stderr.contains("has several ports: 80 (http → http/TCP), 9090")
            && stderr.contains("-r/--remotePort"),
        "{stderr}"
    );
    let (ok, _, stderr) = setup
        .run(&["service", "intercept", "echo", "-n", "demo", "-r", "81"])
        .await;
    assert!(!ok && stderr.contains("has no port 81"), "{stderr}");
    let (ok, _, stderr) = setup
        .run(&[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-r",
            "80",
            "-h",
            "NOCOLON",
        ])
        .await;
    assert!(!ok && stderr.contains("NAME:VALUE"), "{stderr}");
    // A Service whose endpoints someone else manages cannot be redirected.
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .expect("a Service");
    setup
        .services()
        .create(&PostParams::default(), &manual)
        .await
        .expect("create Service demo/manual");
    let (ok, _, stderr) = setup
        .run(&["service", "intercept", "manual", "-n", "demo"])
        .await;
    assert!(
        !ok && stderr.contains("service demo/manual has no selector"),
        "{stderr}"
    );

    // An image the cluster cannot pull: the reason is shown and everything is rolled back. At
    // the same time, another czctl is interrupted (Ctrl-C) while it waits for its proxy.
    let port = support::free_port().await.to_string();
    let pull_args = support::intercept_args(
        &port,
        &[
            "--proxy-image",
            "registry.invalid/cz-nope:1",
            "--timeout",
            "20s",
        ],
    );
    let interrupted = async {
        let mut czctl = Czctl::spawn(setup.czctl(&support::intercept_args(
            &port,
            &[
                "--proxy-image",
                "registry.invalid/cz-nope:2",
                "--timeout",
                "10m",
            ],
        )));
        czctl.read_until("waiting for the proxy").await;
        czctl.signal("INT");
        czctl.finish().await
    };
    let ((ok, _, stderr), (interrupted_ok, _, interrupted_stderr)) =
        tokio::join!(setup.run(&pull_args), interrupted);
    assert!(
        !ok && stderr.contains("did not become ready within 20s")
            && stderr.contains("ImagePullBackOff")
            && stderr.contains("--proxy-image"),
        "{stderr}"
    );
    assert!(
        !interrupted_ok
            && interrupted_stderr.contains("everything czctl had created was removed")
            && interrupted_stderr.contains("interrupted (Ctrl-C or SIGTERM) while setting up"),
        "{interrupted_stderr}"
    );
    setup.no_leftovers("after the failed set-ups").await;
    assert_eq!(setup.service_state().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_peoples_changes_are_kept_and_deleting_the_service_removes_the_session() {
    let setup = Setup::start().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    // Someone else points the Service elsewhere during the intercept: every key of theirs stays.
    let theirs = BTreeMap::from([
        ("app".to_owned(), "echo".to_owned()),
        ("track".to_owned(), "canary".to_owned()),
    ]);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/selector", "value": theirs},
    ]))
    .expect("a JSON patch");
    setup
        .services()
        .patch("echo", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .expect("change the selector");
    czctl.signal("INT");
    let (ok, rest, stderr) = czctl.finish().await;
    assert!(ok, "{stderr}");
    assert!(
        rest.iter().any(|l| l.contains("left as they set it")),
        "{rest:?}"
    );
    let service = setup.services().get("echo").await.expect("the Service");
    assert_eq!(
        service.spec.and_then(|s| s.selector),
        Some(theirs),
        "their selector stays"
    );
    assert!(!service
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("czctl.io/intercept"));
    setup.no_leftovers("after czctl stopped").await;

    // Deleting the intercepted Service deletes the proxy, shadow Service and Secret with it.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/selector", "value": {"app": "echo"}},
    ]))
    .expect("a JSON patch");
    setup
        .services()
        .patch("echo", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .expect("select the pods again");
    let czctl = setup.intercept(laptop.port, &[]).await;
    setup
        .services()
        .delete("echo", &DeleteParams::default())
        .await
        .expect("delete the intercepted Service");
    setup
        .no_leftovers("after the intercepted Service was deleted")
        .await;
    czctl.signal("INT");
    let (ok, _, stderr) = czctl.finish().await;
    assert!(ok, "czctl stops cleanly with nothing left: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_follows_a_replaced_proxy_pod() {
    let setup = Setup::start().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(setup.client.clone(), NAMESPACE);
    let old = setup.proxy_pods().await.remove(0);
    let old_name = old.metadata.name.clone().expect("name");
    pods.delete(&old_name, &Default::default())
        .await
        .expect("delete the proxy pod");
    // The Deployment replaces the pod (new IP); czctl finds it and intercepts again. (Until the
    // old pod has stopped, it may still answer: so first its replacement, then the answer.)
    cz_testkit::eventually(
        "the Deployment to replace the proxy pod",
        CZCTL_DEADLINE,
        || async {
            let pods = setup.proxy_pods().await;
            (pods.len() == 1 && pods[0].metadata.name.as_deref() != Some(old_name.as_str()))
                .then_some(())
        },
    )
    .await;
    setup
        .laptop_answers("the laptop to answer through the new proxy pod")
        .await;
    setup.stop_cleanly(czctl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_works_in_a_namespace_enforcing_the_restricted_pod_security_level() {
    let setup = Setup::start().await;
    // Labelled after the sample runs: admission judges the pods created from now on, the
    // proxy's among them.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(setup.client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
            ),
        )
        .await
        .expect("label the namespace");
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    setup
        .laptop_answers("a request with the header to reach the laptop")
        .await;
    setup.stop_cleanly(czctl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_defaults_work_as_documented() {
    let setup = Setup::start().await;
    // A single-port Service, and a UDP Service exposing the proxy's tunnel port: what a user
    // who cannot reach pod IPs would point --tunnel-endpoint at.
    // The local port defaults to the remote port: the laptop app's port is the Service's.
    let laptop = LaptopApp::start(0).await;
    let port = laptop.port;
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }))
    .expect("a Service");
    let tunnel: Service = serde_json::from_value(json!({
        "metadata": {"name": "tunnel"},
        "spec": {"selector": {"app.kubernetes.io/name": "cz-proxy"}, "ports": [{"port": 7443, "targetPort": 7443, "protocol": "UDP"}]},
    }))
    .expect("a Service");
    for service in [web, tunnel] {
        setup
            .services()
            .create(&PostParams::default(), &service)
            .await
            .expect("create a Service");
    }
    let web_address = format!("{}:{port}", setup.cluster_ip("web").await);
    let tunnel_endpoint = format!("{}:7443", setup.cluster_ip("tunnel").await);
    // A kubeconfig whose current context names no namespace, plus a context "team" in "demo".
    let mut kubeconfig =
        kube::config::Kubeconfig::from_yaml(setup.cluster.kubeconfig()).expect("kubeconfig");
    let mut team = kubeconfig.contexts[0].clone();
    team.name = "team".into();
    if let Some(context) = team.context.as_mut() {
        context.namespace = Some(NAMESPACE.into());
    }
    kubeconfig.contexts.push(team);
    let path = setup.dir().join("team-kubeconfig");
    std::fs::write(
        &path,
        serde_json::to_string(&kubeconfig).expect("kubeconfig as JSON"),
    )
    .expect("write the kubeconfig");
    let with_env = |args: &[&str]| {
        let mut command = support::czctl(args);
        command.env("KUBECONFIG", &path);
        command
    };

    let mut czctl = Czctl::spawn(with_env(&[
        "service",
        "intercept",
        "web",
        "--context",
        "team",
        "-x",
        "X-Dev:me",
        "--tunnel-endpoint",
        &tunnel_endpoint,
        "--image-pull-secret",
        "regcred",
    ]));
    let summary = czctl.read_until("Intercepting").await;
    assert!(
        summary.contains(&format!("demo/web port {port}"))
            && summary.contains(&format!("localhost:{port}")),
        "{summary}"
    );
    assert!(
        czctl.seen.iter().any(|l| l.contains(&format!(
            "tunnel connected over direct UDP to {tunnel_endpoint}"
        ))),
        "the tunnel dials --tunnel-endpoint: {:?}",
        czctl.seen
    );
    let deployments = Api::<Deployment>::namespaced(setup.client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=czctl"))
        .await
        .expect("list Deployments")
        .items;
    let pull_secrets = deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    assert_eq!(
        pull_secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["regcred"]
    );
    // The rule's name matches case-insensitively, `_` as `-`.
    cz_testkit::eventually(
        "a request with x_dev: me to reach the laptop",
        CZCTL_DEADLINE,
        || async {
            (answered_by(&web_address, Some(("x_dev", "me")))
                .await
                .ok()?
                == "laptop")
                .then_some(())
        },
    )
    .await;
    let pod = answered_by(&web_address, Some(INTERCEPT))
        .await
        .expect("an answer");
    assert!(
        pod.starts_with("echo-"),
        "the default header is not the rule: {pod}"
    );

    let (ok, listing, stderr) =
        support::run(with_env(&["session", "list", "--context", "team"])).await;
    let row = listing
        .lines()
        .find(|l| l.starts_with("demo/web"))
        .unwrap_or_else(|| panic!("no demo/web in {listing}{stderr}"));
    assert!(
        ok && row.to_lowercase().contains("x-dev:me") && row.contains(&port.to_string()),
        "{listing}"
    );
    setup.stop_cleanly(czctl).await;
}
