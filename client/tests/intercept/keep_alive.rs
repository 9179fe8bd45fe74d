//! Keep-alive clients lose nothing: a pool of 32 HTTP/1.1 keep-alive connections and one HTTP/2
//! connection, sending continuously through the Service's NodePort with and without the
//! intercept header, sees no failed request across czctl's start and stop, and across a
//! deleted proxy pod (which the Deployment replaces while the session runs).

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::Api;

use super::support::http::LaptopApp;
use super::support::pool::{Pool, Summary};
use super::support::{Setup, NAMESPACE};

/// Requests the pool must have answered between two steps, so that each step happens under load.
pub(crate) const UNDER_LOAD: usize = 2_000;

/// Fails with every failed request, if any; `what` names the scenario.
pub(crate) fn assert_none_failed(summary: &Summary, what: &str) {
    eprintln!(
        "{what}: {} answered ({} by the laptop), {} connections ended by the server, {} HTTP/2 requests resent",
        summary.answered, summary.by_laptop, summary.closed_by_server, summary.resent
    );
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for failure in &summary.failures {
        // "/pool/h1/header/17: why" counts as "h1/header: why".
        let (path, why) = failure.split_once(": ").unwrap_or((failure, ""));
        let client: Vec<&str> = path.split('/').skip(2).take(2).collect();
        let why: String = why.chars().take(60).collect();
        *kinds
            .entry(format!("{}: {why}", client.join("/")))
            .or_default() += 1;
    }
    eprintln!("{what}: failures by kind: {kinds:#?}");
    assert!(
        summary.failures.is_empty(),
        "{what}: {} of {} requests failed: {:#?}",
        summary.failures.len(),
        summary.answered + summary.failures.len(),
        summary.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_pool_loses_no_request_across_start_and_stop() {
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let pool = Pool::start(&setup.service_address);
    pool.wait_for(UNDER_LOAD, false, "the pool to be answered by the pods")
        .await;
    for round in 1..=2 {
        let czctl = setup.intercept(laptop.port, &[]).await;
        pool.wait_for(UNDER_LOAD, true, "the pool to reach the laptop")
            .await;
        setup.stop_cleanly(czctl).await;
        pool.wait_for(
            UNDER_LOAD,
            false,
            &format!("the pool to go on after stop {round}"),
        )
        .await;
    }
    let summary = pool.finish().await;
    assert_none_failed(&summary, "start and stop, twice");
    assert!(
        summary.closed_by_server > 0,
        "the proxy ended connections: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_pool_loses_no_request_when_the_proxy_pod_is_deleted() {
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let mut czctl = setup.intercept(laptop.port, &[]).await;
    let pool = Pool::start(&setup.service_address);
    let started = std::time::Instant::now();
    let at = || format!("at {:.1} s", started.elapsed().as_secs_f64());
    pool.wait_for(UNDER_LOAD, true, "the pool to reach the laptop")
        .await;

    let pods = Api::<Pod>::namespaced(setup.client.clone(), NAMESPACE);
    let [old] = &setup.proxy_pods().await[..] else {
        panic!("one proxy pod");
    };
    let old = old.metadata.name.clone().expect("a name");
    pods.delete(&old, &DeleteParams::default())
        .await
        .expect("delete the proxy pod");
    eprintln!("proxy pod deleted {}", at());
    // The old pod drains (its shutdown delay, then its requests in flight) and is gone; from
    // then on only the new one serves, so the pool's next requests prove the hand-over.
    cz_testkit::eventually(
        "the old proxy pod to be gone and a new one to serve",
        super::support::CZCTL_DEADLINE,
        || async {
            let pods = setup.proxy_pods().await;
            let names: Vec<_> = pods
                .iter()
                .filter_map(|pod| pod.metadata.name.clone())
                .collect();
            (!names.contains(&old) && !names.is_empty()).then_some(())
        },
    )
    .await;
    eprintln!("the old proxy pod is gone {}", at());
    // czctl moved its tunnel over before the old pod had drained, and says so.
    czctl.read_until("connecting to its replacement").await;
    czctl.read_until("tunnel connected over").await;
    assert!(
        !czctl.seen.iter().any(|line| line.contains("tunnel lost")),
        "{:?}",
        czctl.seen
    );
    setup
        .laptop_answers("the laptop to answer through the new proxy")
        .await;
    pool.wait_for(UNDER_LOAD, true, "the pool to reach the laptop again")
        .await;
    eprintln!("stopping czctl {}", at());
    setup.stop_cleanly(czctl).await;
    eprintln!("czctl stopped {}", at());
    let summary = pool.finish().await;
    assert_none_failed(&summary, "a deleted proxy pod");
}
