//! Several developers on one Service, with the real `czctl`: each joins the running proxy with
//! their own header value and gets only their own requests; leaving detaches a route without
//! touching the others; a killed laptop's route goes back to the pods after its orphan delay; the
//! last one out restores the Service exactly — and traffic through the Service never fails.

use czctl::INTERCEPT_ANNOTATION;
use serde_json::Value;

use crate::keep_alive::{assert_none_failed, UNDER_LOAD};
use crate::support::http::{answered_by, LaptopApp};
use crate::support::load::{Connections, Load};
use crate::support::pool::Pool;
use crate::support::{intercept_args, Czctl, Setup, CZCTL_DEADLINE, NAMESPACE};

const ALICE: (&str, &str) = ("x-dev", "alice");
const BOB: (&str, &str) = ("x-dev", "bob");
const CAROL: (&str, &str) = ("x-dev", "carol");

/// `czctl service intercept` of the sample as `user`, with `header`, serving `laptop`.
fn developer(setup: &Setup, user: &str, laptop: &LaptopApp, header: &str, extra: &[&str]) -> Czctl {
    let port = laptop.port.to_string();
    let mut args = intercept_args(&port, &["-x", header]);
    args.extend_from_slice(extra);
    let mut command = setup.czctl(&args);
    command.env("USER", user);
    Czctl::spawn(command)
}

/// Stops `czctl` as Ctrl-C does; it must succeed. Returns the lines it printed last.
async fn leave(czctl: Czctl) -> Vec<String> {
    czctl.signal("INT");
    let (ok, rest, stderr) = czctl.finish().await;
    assert!(ok, "{stderr}");
    rest
}

/// Who answers a request with `header` (fresh connection).
async fn who(setup: &Setup, header: (&str, &str)) -> String {
    answered_by(&setup.service_address, Some(header))
        .await
        .unwrap_or_else(|error| format!("error: {error}"))
}

/// The sessions recorded on the Service, as (session, owner) pairs.
async fn recorded(setup: &Setup) -> Vec<(String, String)> {
    let service = setup.services().get("echo").await.expect("the Service");
    let Some(text) = service
        .metadata
        .annotations
        .and_then(|mut a| a.remove(INTERCEPT_ANNOTATION))
    else {
        return Vec::new();
    };
    let record: Value = serde_json::from_str(&text).expect("the record is JSON");
    record["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let field = |name: &str| m[name].as_str().unwrap_or_default().to_owned();
            (field("session"), field("owner"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developers_join_and_leave_one_intercept_each_with_their_own_requests() {
    let setup = Setup::start().await;
    setup.annotate_service().await;
    let before = setup.service_state().await;
    let (alice_app, bob_app, carol_app) = (
        LaptopApp::named(0, "alice").await,
        LaptopApp::named(0, "bob").await,
        LaptopApp::named(0, "carol").await,
    );
    let mut load = Load::start_empty(&setup.service_address);
    load.add_developer("fresh, no header", None, Connections::Fresh);
    load.add_developer("keep-alive, no header", None, Connections::Kept);
    load.add_developer("fresh, alice", Some((ALICE, "alice")), Connections::Fresh);
    load.add_developer(
        "keep-alive, alice",
        Some((ALICE, "alice")),
        Connections::Recycled,
    );
    load.add_developer("keep-alive, bob", Some((BOB, "bob")), Connections::Recycled);

    let mut alice = developer(&setup, "alice", &alice_app, "x-dev:alice", &[]);
    alice.read_until("Intercepting").await;
    let mut bob = developer(&setup, "bob", &bob_app, "x-dev:bob", &[]);
    bob.read_until("Intercepting").await;
    assert!(
        bob.seen
            .iter()
            .any(|l| l.contains("joined the proxy") && l.contains("alice@")),
        "bob joins alice's proxy: {:?}",
        bob.seen
    );
    assert_eq!(setup.proxy_pods().await.len(), 1, "one proxy for both");
    assert_eq!(who(&setup, ALICE).await, "alice");
    assert_eq!(who(&setup, BOB).await, "bob");
    assert!(who(&setup, CAROL).await.starts_with("echo-"));

    // The same header value is refused, saying who holds it and how to close it.
    let (ok, _, stderr) = setup
        .run(&intercept_args(
            &carol_app.port.to_string(),
            &["-x", "X-Dev:Alice"],
        ))
        .await;
    assert!(!ok, "a taken header must be refused");
    for part in ["x-dev:alice", "alice@", "--session"] {
        assert!(stderr.contains(part), "{part} missing from: {stderr}");
    }

    // Carol joins with a short orphan delay, then her czctl is killed.
    let mut carol = developer(
        &setup,
        "carol",
        &carol_app,
        "x-dev:carol",
        &["--orphan-after", "1s"],
    );
    carol.read_until("Intercepting").await;
    assert_eq!(who(&setup, CAROL).await, "carol");
    carol.child.kill().await.expect("SIGKILL");
    let (_, listing, _) = setup.run(&["session", "list", "-n", NAMESPACE]).await;
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("demo/echo"))
            .count(),
        3,
        "{listing}"
    );
    cz_testkit::eventually(
        "carol's requests to go back to the pods",
        CZCTL_DEADLINE,
        || async { who(&setup, CAROL).await.starts_with("echo-").then_some(()) },
    )
    .await;
    assert_eq!(
        who(&setup, BOB).await,
        "bob",
        "bob is untouched by carol's crash"
    );
    let (_, listing, _) = setup.run(&["session", "list", "-n", NAMESPACE]).await;
    let carol_id = recorded(&setup)
        .await
        .into_iter()
        .find(|(_, owner)| owner.starts_with("carol@"))
        .map(|(session, _)| session)
        .expect("carol is still recorded");
    assert!(
        listing.contains("ABANDONED") && listing.contains(&format!("--session {carol_id}")),
        "{listing}"
    );
    let (ok, stdout, stderr) = setup
        .run(&["session", "close", "-n", NAMESPACE, "--session", &carol_id])
        .await;
    assert!(
        ok && stdout.contains("1 session(s) closed"),
        "{stdout}{stderr}"
    );
    assert_eq!(recorded(&setup).await.len(), 2);

    // Alice leaves first: her route goes, bob's stays, the Service stays switched.
    let rest = leave(alice).await;
    assert!(
        rest.iter()
            .any(|l| l.contains("it goes on for 1 other session(s)")),
        "{rest:?}"
    );
    assert!(who(&setup, ALICE).await.starts_with("echo-"));
    assert_eq!(who(&setup, BOB).await, "bob");
    assert_eq!(setup.proxy_pods().await.len(), 1);

    // Bob, the last one out, restores everything.
    let rest = leave(bob).await;
    assert!(
        rest.iter().any(|l| l.contains("the service is restored")),
        "{rest:?}"
    );
    assert_eq!(setup.service_state().await, before, "restored exactly");
    setup.no_leftovers("after the last developer left").await;

    for (name, tally) in load.finish().await {
        assert!(
            tally.failures.is_empty() && tally.answered > 0,
            "{name}: {} answered, failures: {:?}",
            tally.answered,
            tally.failures
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_developers_starting_at_the_same_moment_share_one_proxy() {
    let setup = Setup::start().await;
    let before = setup.service_state().await;
    let (alice_app, bob_app) = (
        LaptopApp::named(0, "alice").await,
        LaptopApp::named(0, "bob").await,
    );
    let mut alice = developer(&setup, "alice", &alice_app, "x-dev:alice", &[]);
    let mut bob = developer(&setup, "bob", &bob_app, "x-dev:bob", &[]);
    let (_, _) = tokio::join!(
        alice.read_until("Intercepting"),
        bob.read_until("Intercepting")
    );
    assert_eq!(recorded(&setup).await.len(), 2, "both are recorded");
    assert_eq!(who(&setup, ALICE).await, "alice");
    assert_eq!(who(&setup, BOB).await, "bob");
    cz_testkit::eventually("one proxy to be left", CZCTL_DEADLINE, || async {
        (setup.proxy_pods().await.len() == 1).then_some(())
    })
    .await;
    for czctl in [alice, bob] {
        leave(czctl).await;
    }
    assert_eq!(setup.service_state().await, before);
    setup.no_leftovers("after both left").await;
}

/// Alice starts the intercept of the sample and bob joins it, each with their own header.
async fn alice_then_bob(setup: &Setup, apps: &(LaptopApp, LaptopApp)) -> (Czctl, Czctl) {
    let mut alice = developer(setup, "alice", &apps.0, "x-dev:alice", &[]);
    alice.read_until("Intercepting").await;
    let mut bob = developer(setup, "bob", &apps.1, "x-dev:bob", &[]);
    bob.read_until("Intercepting").await;
    (alice, bob)
}

/// Deletes the proxy pod and waits until its replacement is the only one left.
async fn replace_the_proxy_pod(setup: &Setup) {
    let old = setup.proxy_pods().await.remove(0);
    let old_name = old.metadata.name.expect("name");
    let pods =
        kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(setup.client.clone(), NAMESPACE);
    pods.delete(&old_name, &Default::default())
        .await
        .expect("delete the proxy pod");
    cz_testkit::eventually("the proxy pod to be replaced", CZCTL_DEADLINE, || async {
        let pods = setup.proxy_pods().await;
        (pods.len() == 1 && pods[0].metadata.name.as_deref() != Some(old_name.as_str()))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_session_takes_its_route_back_on_a_replaced_proxy_pod() {
    let setup = Setup::start().await;
    let apps = (
        LaptopApp::named(0, "alice").await,
        LaptopApp::named(0, "bob").await,
    );
    let (alice, bob) = alice_then_bob(&setup, &apps).await;
    // The new pod starts with alice's route only (from its flags); bob's czctl registers his
    // again before it reconnects.
    replace_the_proxy_pod(&setup).await;
    for (header, laptop) in [(ALICE, "alice"), (BOB, "bob")] {
        cz_testkit::eventually(
            &format!("{laptop}'s route on the new proxy pod"),
            CZCTL_DEADLINE,
            || async { (who(&setup, header).await == laptop).then_some(()) },
        )
        .await;
    }
    leave(bob).await;
    leave(alice).await;
    setup.no_leftovers("after both left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_proxy_pod_forgets_the_route_of_its_creator_who_left() {
    let setup = Setup::start().await;
    let apps = (
        LaptopApp::named(0, "alice").await,
        LaptopApp::named(0, "bob").await,
    );
    let (alice, bob) = alice_then_bob(&setup, &apps).await;
    leave(alice).await;
    assert!(who(&setup, ALICE).await.starts_with("echo-"));

    // The new pod starts with its flags' route, alice's, though she left: bob's czctl, moving
    // to the new pod, registers his route and detaches hers, which the Service no longer records.
    replace_the_proxy_pod(&setup).await;
    cz_testkit::eventually("bob's route on the new pod", CZCTL_DEADLINE, || async {
        (who(&setup, BOB).await == "bob").then_some(())
    })
    .await;
    let alice_goes_to = who(&setup, ALICE).await;
    assert!(
        alice_goes_to.starts_with("echo-"),
        "alice's requests go to the pods, not to a route waiting for her laptop: {alice_goes_to}"
    );
    leave(bob).await;
    setup.no_leftovers("after both left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_pool_loses_no_request_as_developers_join_and_leave() {
    let setup = Setup::start_isolated().await;
    // The pool sends the default intercept header (alice's) or none; bob's rule is another.
    let (alice_app, bob_app) = (LaptopApp::start(0).await, LaptopApp::named(0, "bob").await);
    let pool = Pool::start(&setup.service_address);
    pool.wait_for(UNDER_LOAD, false, "the pool to be answered by the pods")
        .await;
    let mut alice = developer(&setup, "alice", &alice_app, "X-C6O-INTERCEPT:yes", &[]);
    alice.read_until("Intercepting").await;
    pool.wait_for(UNDER_LOAD, true, "the pool to reach alice")
        .await;
    let mut bob = developer(&setup, "bob", &bob_app, "x-dev:bob", &[]);
    bob.read_until("Intercepting").await;
    pool.wait_for(UNDER_LOAD, true, "the pool to go on as bob joins")
        .await;
    leave(alice).await;
    pool.wait_for(UNDER_LOAD, false, "the pool to go on as alice leaves")
        .await;
    let mut alice = developer(&setup, "alice", &alice_app, "X-C6O-INTERCEPT:yes", &[]);
    alice.read_until("Intercepting").await;
    pool.wait_for(UNDER_LOAD, true, "the pool to reach alice again")
        .await;
    for czctl in [bob, alice] {
        leave(czctl).await;
    }
    pool.wait_for(
        UNDER_LOAD,
        false,
        "the pool to go on after the last one left",
    )
    .await;
    let summary = pool.finish().await;
    assert_none_failed(&summary, "join, leave, join again, leave, stop");
    setup.no_leftovers("after both left").await;
}
