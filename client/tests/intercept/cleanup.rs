//! Clean-up deletes only what its session created, and says what it could not delete.

use crate::support::http::LaptopApp;
use crate::support::Setup;
use cz_testkit::resources::{DEPLOYMENTS, SECRETS, SERVICES};
use serde_json::{json, Value};

/// A user's own objects that carry czctl's labels, even the session and service ones.
fn create_users_objects(
    setup: &Setup,
) -> Vec<(&'static cz_testkit::resources::Kind, &'static str, String)> {
    let store = setup.cluster.store();
    let labels = json!({"app.kubernetes.io/managed-by": "czctl", "app": "billing"});
    let nasty = json!({
        "app.kubernetes.io/managed-by": "czctl",
        "czctl.io/service": "echo",
        "czctl.io/session": "0badc0de",
    });
    let service = store
        .create(
            &SERVICES,
            "demo",
            json!({
                "metadata": {"name": "billing", "labels": labels},
                "spec": {"selector": {"app": "billing"}, "ports": [{"port": 80}]},
            }),
        )
        .expect("user's Service");
    let deployment = store
        .create(
            &DEPLOYMENTS,
            "demo",
            json!({
                "metadata": {"name": "billing", "labels": nasty},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "billing"}},
                    "template": {
                        "metadata": {"labels": {"app": "billing"}},
                        "spec": {"containers": [{"name": "billing", "image": "example/echo"}]},
                    },
                },
            }),
        )
        .expect("user's Deployment");
    let secret = store
        .create(
            &SECRETS,
            "demo",
            json!({
                "metadata": {"name": "prod-db-credentials", "labels": nasty},
                "data": {"password": "aHVudGVyMg=="},
            }),
        )
        .expect("user's Secret");
    [
        (&SERVICES, "billing", service),
        (&DEPLOYMENTS, "billing", deployment),
        (&SECRETS, "prod-db-credentials", secret),
    ]
    .into_iter()
    .map(|(kind, name, object)| (kind, name, uid(&object)))
    .collect()
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned()
}

/// Panics unless each of the user's objects exists with its original uid.
fn assert_untouched(
    setup: &Setup,
    objects: &[(&'static cz_testkit::resources::Kind, &'static str, String)],
    after: &str,
) {
    for (kind, name, original) in objects {
        let object = setup
            .cluster
            .store()
            .get(kind, "demo", name)
            .unwrap_or_else(|_| panic!("{} {name} was deleted by {after}", kind.plural));
        assert_eq!(
            &uid(&object),
            original,
            "{} {name} was replaced by {after}",
            kind.plural
        );
    }
}

/// The names of czctl's session objects still in demo (the user's own excluded).
fn sessions_objects(setup: &Setup) -> Vec<String> {
    let store = setup.cluster.store();
    let mut left = Vec::new();
    for kind in [&DEPLOYMENTS, &SERVICES, &SECRETS] {
        let (items, _) = store.list(kind, Some("demo"), &Default::default());
        left.extend(
            items
                .iter()
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                .filter(|name| name.starts_with("cz-")),
        );
    }
    left
}

/// Starts an intercept and kills czctl, leaving the session behind as a crash does.
async fn crashed_intercept(setup: &Setup) {
    let laptop = LaptopApp::start(0).await;
    let mut czctl = setup.intercept(laptop.port, &[]).await;
    czctl.child.kill().await.expect("SIGKILL");
    assert!(
        !sessions_objects(setup).is_empty(),
        "the crash left the session behind"
    );
}

#[tokio::test]
async fn users_objects_labelled_managed_by_czctl_survive_clean_and_session_close() {
    let setup = Setup::start().await;
    let users = create_users_objects(&setup);

    for (command, said) in [
        (
            &["service", "intercept", "echo", "-n", "demo", "--clean"][..],
            "service selector restored",
        ),
        (
            &["session", "close", "-n", "demo"][..],
            "1 session(s) closed",
        ),
        (&["session", "close", "-A"][..], "1 session(s) closed"),
    ] {
        crashed_intercept(&setup).await;
        let (ok, stdout, stderr) = setup.run(command).await;
        let command = command.join(" ");
        assert!(ok && stdout.contains(said), "{command}: {stdout}{stderr}");
        assert_eq!(
            sessions_objects(&setup),
            Vec::<String>::new(),
            "{command} removed the session"
        );
        assert_untouched(&setup, &users, &command);
    }
}

#[tokio::test]
async fn a_delete_the_cluster_refuses_is_reported_with_its_command_and_czctl_fails() {
    let setup = Setup::start().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    let proxy = sessions_objects(&setup)
        .into_iter()
        .find(|name| name.starts_with("cz-proxy-"))
        .expect("the proxy deployment");
    setup.cluster.store().refuse_deletes(&DEPLOYMENTS, "demo");

    czctl.signal("INT");
    let (ok, _, stderr) = czctl.finish().await;
    assert!(!ok, "czctl exits non-zero: {stderr}");
    for expected in [
        format!("kubectl delete deployment {proxy} -n demo"),
        "refused (403 Forbidden) to let you delete deployments in namespace \"demo\"".to_owned(),
        "deploy/rbac.yaml".to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "{expected} missing from:\n{stderr}"
        );
    }
    assert_eq!(
        sessions_objects(&setup),
        vec![proxy],
        "everything else of the session was removed; only the refused deployment is left"
    );
    let service = setup
        .cluster
        .store()
        .get(&SERVICES, "demo", "echo")
        .expect("service");
    assert_eq!(
        service["spec"]["selector"],
        json!({"app": "echo"}),
        "the selector was restored first"
    );
}
