use std::time::Duration;

use cz_shared::tls::SessionCa;
use cz_shared::InterceptRule;
use http::{HeaderMap, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::*;

const LIMITS: TunnelLimits = TunnelLimits {
    max_requests: 2,
    slot_timeout: Duration::from_secs(5),
    response_timeout: Duration::from_secs(60),
    max_head_len: 64 * 1024,
};

const HOUR: Duration = Duration::from_secs(3600);

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

/// A route of a new session with `rule`, and the session's CA.
fn route(id: &str, rule: &str, orphan_after: Duration) -> (Arc<Route>, SessionCa) {
    let ca = SessionCa::generate().expect("CA");
    let session = Session {
        id: id.into(),
        client_ca: ca.certificate_pem().to_owned(),
        orphan_after,
    };
    let rule: InterceptRule = rule.parse().expect("rule");
    (Route::new(session, rule, LIMITS).expect("route"), ca)
}

fn session_of(matched: Match) -> Option<String> {
    match matched {
        Match::Laptop(route) => Some(route.session().id.clone()),
        Match::Upstream => None,
        Match::Conflict(routes) => panic!("{} routes matched", routes.len()),
    }
}

#[test]
fn routes_are_joined_and_detached_at_run_time() {
    let table = RouteTable::default();
    table
        .join(route("alice", "x-dev:alice", HOUR).0)
        .expect("joins");
    table
        .join(route("bob", "x-dev:bob", HOUR).0)
        .expect("joins");
    assert_eq!(
        session_of(table.find(&headers(&[("x-dev", "bob")]))),
        Some("bob".into())
    );
    assert_eq!(
        session_of(table.find(&headers(&[("X_Dev", "ALICE")]))),
        Some("alice".into())
    );
    assert_eq!(
        session_of(table.find(&headers(&[("x-dev", "carol")]))),
        None
    );
    assert!(table.is_rule_name(b"X_DEV"));
    assert!(!table.is_rule_name(b"x-other"));
    assert!(table.remove("bob").is_some());
    assert!(table.remove("bob").is_none(), "already detached");
    assert_eq!(session_of(table.find(&headers(&[("x-dev", "bob")]))), None);
    assert_eq!(table.all().len(), 1);
}

#[test]
fn a_request_matching_two_routes_goes_to_neither() {
    let table = RouteTable::default();
    table
        .join(route("alice", "x-dev:alice", HOUR).0)
        .expect("joins");
    table
        .join(route("team", "x-team:payments", HOUR).0)
        .expect("joins");
    table
        .join(route("bob", "x-dev:bob", HOUR).0)
        .expect("joins");
    let both = headers(&[("x-dev", "alice"), ("x-team", "payments"), ("x-dev", "bob")]);
    let Match::Conflict(routes) = table.find(&both) else {
        panic!("a request matching three routes must be a conflict");
    };
    let sessions: Vec<_> = routes.iter().map(|r| r.session().id.as_str()).collect();
    assert_eq!(sessions, ["alice", "team", "bob"], "in matching order");
}

#[test]
fn a_rule_or_ca_held_by_another_session_is_refused_and_a_rejoin_is_kept() {
    let table = RouteTable::default();
    let (alice, alice_ca) = route("alice", "x-dev:alice", HOUR);
    table.join(alice.clone()).expect("joins");
    let (same_rule, _) = route("bob", "X_DEV: Alice", HOUR);
    assert_eq!(
        table.join(same_rule).err(),
        Some(JoinRefused::RuleTaken {
            rule: "x-dev:Alice".into(),
            held_by: "alice".into()
        })
    );
    let stolen_ca = Session {
        id: "mallory".into(),
        client_ca: alice_ca.certificate_pem().to_owned(),
        orphan_after: HOUR,
    };
    let stolen = Route::new(stolen_ca, "x-dev:mallory".parse().expect("rule"), LIMITS);
    let refused = table.join(stolen.expect("route")).err().expect("refused");
    assert_eq!((refused.code(), refused.held_by()), ("ca-taken", "alice"));

    // The same session again (a proxy pod that lost it, a retried request): the route it has.
    let again = Route::new(alice.session().clone(), alice.rule().clone(), LIMITS);
    let kept = table.join(again.expect("route")).expect("rejoins");
    assert!(Arc::ptr_eq(&kept, &alice));
    let (other_rule, _) = route("alice", "x-dev:alice2", HOUR);
    assert_eq!(
        table.join(other_rule).err().map(|e| e.code()),
        Some("session-taken")
    );
}

#[test]
fn a_laptop_is_taken_by_the_route_whose_ca_issued_its_certificate() {
    let table = RouteTable::default();
    let (alice, alice_ca) = route("alice", "x-dev:alice", HOUR);
    let (bob, bob_ca) = route("bob", "x-dev:bob", HOUR);
    table.join(alice).expect("joins");
    table.join(bob).expect("joins");
    let chain = |ca: &SessionCa| {
        let laptop = ca.issue_client().expect("client certificate");
        vec![CertificateDer::from_pem_slice(laptop.cert_pem.as_bytes()).expect("PEM")]
    };
    let session = |ca| table.for_laptop(&chain(ca)).map(|r| r.session().id.clone());
    assert_eq!(session(&bob_ca), Some("bob".into()));
    assert_eq!(session(&alice_ca), Some("alice".into()));
    let stranger = SessionCa::generate().expect("CA");
    assert_eq!(session(&stranger), None, "a stranger");
    table.remove("bob");
    assert_eq!(session(&bob_ca), None, "a detached session's laptop");
}

#[test]
fn a_route_whose_laptop_stays_away_past_its_orphan_delay_gives_requests_back() {
    let table = RouteTable::default();
    let (alice, _) = route("alice", "x-dev:alice", Duration::ZERO);
    let (bob, _) = route("bob", "x-dev:bob", HOUR);
    table.join(alice.clone()).expect("joins");
    table.join(bob.clone()).expect("joins");
    assert!(alice.abandoned() && !bob.abandoned());
    assert_eq!(
        session_of(table.find(&headers(&[("x-dev", "alice")]))),
        None
    );
    assert_eq!(
        session_of(table.find(&headers(&[("x-dev", "bob")]))),
        Some("bob".into())
    );
    // An abandoned route takes no part in a conflict either.
    let both = headers(&[("x-dev", "alice"), ("x-dev", "bob")]);
    assert_eq!(session_of(table.find(&both)), Some("bob".into()));
    let state = alice.state();
    assert!(state.abandoned && !state.connected && state.disconnected_seconds.is_some());
}

#[tokio::test]
async fn waiting_for_a_laptop_gives_up_after_the_grace_period_not_before() {
    let (route, _) = route("alice", "x-dev:alice", HOUR);
    let grace = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(20), route.laptop(grace))
        .await
        .expect("the wait ends once the grace period is over");
    assert!(waited.is_none(), "no laptop ever connected");
    assert!(
        started.elapsed() >= grace,
        "gave up after {:?}, before the {grace:?} grace period",
        started.elapsed()
    );
    assert!(route.connected_laptop().is_none());
}

#[tokio::test]
async fn a_route_admits_its_limit_of_requests_and_the_next_when_one_ends() {
    let (route, _) = route("alice", "x-dev:alice", HOUR);
    let first = route.admit().await;
    let _second = route.admit().await;
    let mut third = std::pin::pin!(route.admit());
    assert!(
        futures_util::FutureExt::now_or_never(third.as_mut()).is_none(),
        "a third request waits while two are in flight"
    );
    let mut idle = std::pin::pin!(route.idle());
    assert!(futures_util::FutureExt::now_or_never(idle.as_mut()).is_none());
    drop(first);
    tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("the third request is admitted once the first ends");
}
