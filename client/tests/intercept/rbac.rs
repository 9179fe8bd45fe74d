//! Least privilege, proven on the loopback cluster with RBAC enforced: a user bound only to
//! `deploy/rbac.yaml`'s Role runs the whole intercept, and without any one verb of it the step
//! that needs it fails with czctl's message naming the verb, the resource, the namespace and
//! `deploy/rbac.yaml`, leaving nothing half-done — except the one verb whose absence only
//! degrades a step (reading the endpoints at stop: a fixed wait instead, and a message). The table below is the Role's verbs-and-steps
//! table: a verb added to the Role without a row, or a row without its verb, fails the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;

use super::support::http::{answered_by, LaptopApp};
use super::support::{self, Czctl, Setup, NAMESPACE};

/// `deploy/rbac.yaml`, as a platform team applies it.
const ROLE_MANIFEST: &str = include_str!("../../../deploy/rbac.yaml");
/// `deploy/cluster-role.yaml`.
const CLUSTER_ROLE_MANIFEST: &str = include_str!("../../../deploy/cluster-role.yaml");

/// An image no registry has: the proxy never becomes ready.
const MISSING_IMAGE: &str = "registry.invalid/cz-nope:1";

/// Where a missing verb shows.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `czctl service intercept` fails before intercepting; everything is rolled back.
    Intercept,
    /// `czctl service intercept` with a proxy that never becomes ready fails, saying why.
    InterceptUnready,
    /// `czctl session list -n demo` fails.
    SessionList,
    /// `czctl session close -n demo` fails, with no session to close.
    SessionClose,
    /// The intercept starts; stopping it (Ctrl-C) cannot remove one object, and says so.
    Stop,
    /// `czctl service intercept --clean` after a SIGKILL fails before changing anything.
    CleanAfterKill,
    /// The intercept starts and stops cleanly, but the stop says it waited a fixed time instead
    /// of watching the Service's endpoints, and why.
    StopWaitsFixed,
}

/// One verb of the Role: the resource as RBAC names it (`deployments.apps`), the verb, the step
/// that needs it and what czctl says it was refused ("VERB RESOURCE").
struct Row {
    resource: &'static str,
    verb: &'static str,
    step: Step,
    refused: &'static str,
}

/// The Role's verbs and the steps that need them.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    Row { resource: "services", verb: "get", step: Step::Intercept, refused: "get services" },
    Row { resource: "services", verb: "list", step: Step::SessionList, refused: "list services" },
    Row { resource: "services", verb: "create", step: Step::Intercept, refused: "create services" },
    Row { resource: "services", verb: "patch", step: Step::Intercept, refused: "patch services" },
    Row { resource: "services", verb: "delete", step: Step::Stop, refused: "delete services" },
    Row { resource: "secrets", verb: "create", step: Step::Intercept, refused: "create secrets" },
    Row { resource: "deployments.apps", verb: "get", step: Step::CleanAfterKill, refused: "get deployments" },
    Row { resource: "deployments.apps", verb: "list", step: Step::SessionClose, refused: "list deployments" },
    Row { resource: "deployments.apps", verb: "create", step: Step::Intercept, refused: "create deployments" },
    Row { resource: "deployments.apps", verb: "delete", step: Step::Stop, refused: "delete deployments" },
    Row { resource: "pods", verb: "list", step: Step::Intercept, refused: "list pods" },
    Row { resource: "events", verb: "list", step: Step::InterceptUnready, refused: "list events" },
    Row { resource: "endpointslices.discovery.k8s.io", verb: "list", step: Step::StopWaitsFixed, refused: "list endpointslices" },
    Row { resource: "pods/portforward", verb: "get", step: Step::Intercept, refused: "get and create pods/portforward" },
    Row { resource: "pods/portforward", verb: "create", step: Step::Intercept, refused: "get and create pods/portforward" },
];

/// The first document of `manifest`.
fn first_document(manifest: &str) -> Value {
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(manifest).expect("YAML");
    documents.into_iter().next().expect("a document")
}

/// `rule`'s resources as RBAC names them with their group (`deployments.apps`).
fn resources(rule: &Value) -> Vec<String> {
    let strings = |field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let mut named = Vec::new();
    for group in strings("apiGroups") {
        for resource in strings("resources") {
            named.push(if group.is_empty() {
                resource
            } else {
                format!("{resource}.{group}")
            });
        }
    }
    named
}

/// Every (resource, verb) the Role grants.
fn granted(role: &Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for resource in resources(rule) {
            for verb in rule["verbs"].as_array().expect("verbs") {
                pairs.insert((resource.clone(), verb.as_str().expect("a verb").to_owned()));
            }
        }
    }
    pairs
}

/// `role` without `verb` on `resource`, named `name`.
fn without(role: &Value, resource: &str, verb: &str, name: &str) -> Value {
    let mut role = role.clone();
    role["metadata"]["name"] = Value::from(name);
    for rule in role["rules"].as_array_mut().expect("rules") {
        assert_eq!(
            resources(rule).len(),
            1,
            "one resource per rule, so a verb is removed from one resource only: {rule}"
        );
        if resources(rule)[0] == resource {
            rule["verbs"]
                .as_array_mut()
                .expect("verbs")
                .retain(|v| v != verb);
        }
    }
    role["rules"]
        .as_array_mut()
        .expect("rules")
        .retain(|rule| rule["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    assert_eq!(
        granted(&role).len() + 1,
        granted(&first_document(ROLE_MANIFEST)).len()
    );
    role
}

/// A kubeconfig for a new user `name` bound only to `role`.
fn user(setup: &Setup, name: &str, role: Value) -> PathBuf {
    let token = setup
        .cluster
        .add_user(name, &[role])
        .expect("the user is bound");
    let kubeconfig = setup.dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        setup
            .cluster
            .user_kubeconfig(name, &token)
            .expect("the user's kubeconfig"),
    )
    .expect("write the kubeconfig");
    kubeconfig
}

/// `czctl ARGS -k KUBECONFIG`.
fn czctl_as(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = support::czctl(args);
    command.arg("-k").arg(kubeconfig);
    command
}

/// Starts the sample's intercept as the user of `kubeconfig`, waits until it intercepts.
async fn intercept_as(kubeconfig: &Path, laptop_port: u16, extra: &[&str]) -> Czctl {
    let port = laptop_port.to_string();
    let mut czctl = Czctl::spawn(czctl_as(kubeconfig, &support::intercept_args(&port, extra)));
    czctl.read_until("Intercepting").await;
    czctl
}

/// The Service's state and czctl's objects, for "nothing changed".
async fn cluster_state(setup: &Setup) -> (Value, Vec<String>) {
    let mut left = setup.leftovers().await;
    left.sort();
    (setup.service_state().await, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_user_bound_only_to_the_role_the_whole_intercept_works() {
    let setup = Setup::start_isolated().await;
    let before = setup.service_state().await;
    let dev = user(&setup, "dev", first_document(ROLE_MANIFEST));
    let laptop = LaptopApp::start(0).await;

    // Start, traffic both ways, session list, Ctrl-C.
    let czctl = intercept_as(&dev, laptop.port, &[]).await;
    setup
        .laptop_answers("the intercepted request reaches the laptop")
        .await;
    let pod = answered_by(&setup.service_address, None)
        .await
        .expect("an answer");
    assert!(pod.starts_with("echo-"), "without the header: {pod}");
    let (ok, listing, stderr) =
        support::run(czctl_as(&dev, &["session", "list", "-n", NAMESPACE])).await;
    let row = listing.lines().find(|l| l.starts_with("demo/echo"));
    assert!(
        ok && row.is_some_and(|row| row.contains(" connected")),
        "listed, laptop connected: {listing}{stderr}"
    );
    czctl.signal("INT");
    let (ok, rest, stderr) = czctl.finish().await;
    assert!(ok, "{stderr}");
    assert!(
        rest.iter()
            .any(|l| l.contains("goes with its owner shadow service")),
        "the Secret is not claimed as deleted by czctl: {rest:#?}"
    );
    setup.no_leftovers("after Ctrl-C").await;
    assert_eq!(setup.service_state().await, before);

    // --clean after a SIGKILL.
    let mut czctl = intercept_as(&dev, laptop.port, &[]).await;
    czctl.child.kill().await.expect("SIGKILL");
    let (ok, stdout, stderr) = support::run(czctl_as(
        &dev,
        &["service", "intercept", "echo", "-n", NAMESPACE, "--clean"],
    ))
    .await;
    assert!(
        ok && stdout.contains("service selector restored"),
        "{stdout}{stderr}"
    );
    setup.no_leftovers("after --clean").await;
    assert_eq!(setup.service_state().await, before);

    // A proxy that never becomes ready: why, from its pod's events.
    let port = laptop.port.to_string();
    let unready = ["--proxy-image", MISSING_IMAGE, "--timeout", "5s"];
    let (ok, _, stderr) =
        support::run(czctl_as(&dev, &support::intercept_args(&port, &unready))).await;
    assert!(
        !ok && stderr.contains("event Failed: Failed to pull image"),
        "the pod's events say why: {stderr}"
    );
    setup.no_leftovers("after the unready proxy").await;

    // deploy/cluster-role.yaml: session list -A and session close -A, and nothing else.
    let ops = user(&setup, "ops", first_document(CLUSTER_ROLE_MANIFEST));
    let mut czctl = intercept_as(&dev, laptop.port, &[]).await;
    czctl.child.kill().await.expect("SIGKILL");
    let (ok, listing, stderr) = support::run(czctl_as(&ops, &["session", "list", "-A"])).await;
    assert!(
        ok && listing.lines().any(|l| l.starts_with("demo/echo")),
        "{listing}{stderr}"
    );
    let (ok, stdout, stderr) = support::run(czctl_as(&ops, &["session", "close", "-A"])).await;
    assert!(
        ok && stdout.contains("1 session(s) closed"),
        "{stdout}{stderr}"
    );
    setup.no_leftovers("after session close -A").await;
    assert_eq!(setup.service_state().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_verb_of_the_role_is_needed_by_the_step_it_names() {
    let role = first_document(ROLE_MANIFEST);
    let table: BTreeSet<(String, String)> = TABLE
        .iter()
        .map(|row| (row.resource.to_owned(), row.verb.to_owned()))
        .collect();
    assert_eq!(
        granted(&role),
        table,
        "deploy/rbac.yaml's Role grants exactly the verbs of this table"
    );

    let setup = Setup::start_isolated().await;
    let before = cluster_state(&setup).await;
    let laptop = LaptopApp::start(0).await;
    let port = laptop.port.to_string();
    for (index, row) in TABLE.iter().enumerate() {
        let case = format!("without {} on {} ({:?})", row.verb, row.resource, row.step);
        let kubeconfig = user(
            &setup,
            &format!("dev-{index}"),
            without(
                &role,
                row.resource,
                row.verb,
                &format!("czctl-intercept-{index}"),
            ),
        );
        let expected = format!(
            "refused (403 Forbidden) to let you {} in namespace \"{NAMESPACE}\"; ask a cluster admin to grant you the role in deploy/rbac.yaml",
            row.refused
        );
        let (ok, stderr) = match row.step {
            Step::Intercept => {
                let (ok, _, stderr) =
                    support::run(czctl_as(&kubeconfig, &support::intercept_args(&port, &[]))).await;
                (ok, stderr)
            }
            Step::InterceptUnready => {
                let unready = ["--proxy-image", MISSING_IMAGE, "--timeout", "5s"];
                let args = support::intercept_args(&port, &unready);
                let (ok, _, stderr) = support::run(czctl_as(&kubeconfig, &args)).await;
                assert!(
                    stderr.contains("its events could not be read"),
                    "{case}: {stderr}"
                );
                (ok, stderr)
            }
            Step::SessionList => {
                let args = ["session", "list", "-n", NAMESPACE];
                let (ok, _, stderr) = support::run(czctl_as(&kubeconfig, &args)).await;
                (ok, stderr)
            }
            Step::SessionClose => {
                let args = ["session", "close", "-n", NAMESPACE];
                let (ok, _, stderr) = support::run(czctl_as(&kubeconfig, &args)).await;
                (ok, stderr)
            }
            Step::Stop => {
                let czctl = intercept_as(&kubeconfig, laptop.port, &[]).await;
                czctl.signal("INT");
                let (ok, _, stderr) = czctl.finish().await;
                (ok, stderr)
            }
            Step::CleanAfterKill => {
                let mut czctl = setup.intercept(laptop.port, &[]).await;
                czctl.child.kill().await.expect("SIGKILL");
                let crashed = cluster_state(&setup).await;
                let args = ["service", "intercept", "echo", "-n", NAMESPACE, "--clean"];
                let (ok, _, stderr) = support::run(czctl_as(&kubeconfig, &args)).await;
                assert_eq!(
                    cluster_state(&setup).await,
                    crashed,
                    "{case}: the refused clean-up changed nothing"
                );
                (ok, stderr)
            }
            Step::StopWaitsFixed => {
                let czctl = intercept_as(&kubeconfig, laptop.port, &[]).await;
                czctl.signal("INT");
                let (ok, stdout, stderr) = czctl.finish().await;
                let said = stdout.join("\n");
                assert!(
                    said.contains(
                        "could not tell when the service's endpoints stop listing the proxy"
                    ) && said.contains("waiting 2s instead"),
                    "{case}: {said}"
                );
                (ok, format!("{said}\n{stderr}"))
            }
        };
        let degrades = matches!(row.step, Step::StopWaitsFixed);
        assert_eq!(
            ok, degrades,
            "{case}: czctl fails, unless the step only degrades"
        );
        assert!(
            stderr.contains(&expected),
            "{case}: {expected:?} missing from:\n{stderr}"
        );
        eprintln!("{case}:\n{stderr}");
        match row.step {
            Step::Stop => {
                // The Service is restored; what is left is what czctl named, with its command.
                assert_eq!(setup.service_state().await, before.0, "{case}: restored");
                // (The Secret is not reported: it goes with the shadow Service, its owner.)
                let left: Vec<String> = setup
                    .leftovers()
                    .await
                    .into_iter()
                    .filter(|l| !l.starts_with("secret "))
                    .collect();
                let kind = row
                    .refused
                    .trim_start_matches("delete ")
                    .trim_end_matches('s');
                assert!(
                    left.len() == 1
                        && left[0].starts_with(kind)
                        && stderr.contains(&format!("kubectl delete {}", left[0])),
                    "{case}: left {left:?}, reported:\n{stderr}"
                );
                assert!(
                    stderr.contains("remove it with: kubectl delete"),
                    "{case}: {stderr}"
                );
                let (ok, _, stderr) = setup.run(&["session", "close", "-n", NAMESPACE]).await;
                assert!(ok, "{case}: the admin closes the rest: {stderr}");
            }
            Step::CleanAfterKill => {
                let (ok, _, stderr) = setup.run(&["session", "close", "-n", NAMESPACE]).await;
                assert!(ok, "{case}: the admin closes the crashed session: {stderr}");
            }
            _ => {}
        }
        setup.no_leftovers(&case).await;
        assert_eq!(
            cluster_state(&setup).await,
            before,
            "{case}: nothing changed"
        );
    }
}
