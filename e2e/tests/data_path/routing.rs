//! Which requests go where, over both HTTP versions and on shared connections.

use bytes::Bytes;
use cz_e2e::client::{answer, get, http1, http2};
use cz_e2e::{within, PROMPTLY};
use http::{Request, Version};
use http_body_util::Empty;

use crate::intercept;

#[tokio::test]
async fn header_variants_route_to_the_laptop_and_everything_else_to_the_cluster() {
    let setup = intercept(&[]).await;
    let http = setup.proxy.http;
    for headers in [
        vec![("x-c6o-intercept", "yes")],
        vec![("X-C6O-INTERCEPT", "YES")],
        vec![("x_c6o_intercept", " yes ")],
        vec![("x-c6o-intercept", "no"), ("x-c6o-intercept", "yes")],
    ] {
        let answer = get(http, "/orders", &headers).await;
        assert_eq!(answer.served_by(), "laptop", "{headers:?}");
        assert_eq!(answer.body, "laptop GET /orders");
    }
    for headers in [
        vec![],
        vec![("x-c6o-intercept", "no")],
        vec![("x-c6o-intercepted", "yes")],
    ] {
        let answer = get(http, "/orders", &headers).await;
        assert_eq!(answer.served_by(), "cluster", "{headers:?}");
    }
}

#[tokio::test]
async fn custom_rule_matches_underscore_and_dash_spellings() {
    let setup = intercept(&["--header=X-MY-HEADER:ME"]).await;
    let http = setup.proxy.http;
    assert_eq!(
        get(http, "/", &[("x_my_header", "me")]).await.served_by(),
        "laptop"
    );
    assert_eq!(
        get(http, "/", &[("x-my-header", "Me")]).await.served_by(),
        "laptop"
    );
    assert_eq!(
        get(http, "/", &[("x-c6o-intercept", "yes")])
            .await
            .served_by(),
        "cluster"
    );
}

#[tokio::test]
async fn one_keep_alive_connection_carries_both_routes() {
    let setup = intercept(&[]).await;
    let mut connection = http1::<Empty<Bytes>>(setup.proxy.http).await;
    let mut served = Vec::new();
    for intercepted in [true, false, true, true, false] {
        let mut request = Request::get("/mixed").header("host", "svc.test");
        if intercepted {
            request = request.header("x-c6o-intercept", "yes");
        }
        connection.ready().await.expect("connection stays open");
        let response = connection
            .send_request(request.body(Empty::new()).expect("request"))
            .await;
        served.push(
            answer(response.expect("response"))
                .await
                .served_by()
                .to_owned(),
        );
    }
    assert_eq!(served, ["laptop", "cluster", "laptop", "laptop", "cluster"]);
}

#[tokio::test]
async fn http2_requests_take_both_routes_and_stay_http2() {
    let setup = intercept(&[]).await;
    let mut connection = http2::<Empty<Bytes>>(setup.proxy.http).await;
    for (intercepted, expected) in [(true, "laptop"), (false, "cluster")] {
        let mut request =
            Request::get("http://svc.test/grpc.Service/Method").version(Version::HTTP_2);
        if intercepted {
            request = request.header("x-c6o-intercept", "yes");
        }
        let response = connection
            .send_request(request.body(Empty::new()).expect("request"))
            .await;
        let answer = answer(response.expect("response")).await;
        assert_eq!(answer.served_by(), expected);
        assert_eq!(
            answer.headers["x-seen-version"], "HTTP/2.0",
            "{expected} saw HTTP/2"
        );
    }
}

#[tokio::test]
async fn host_is_preserved_and_forwarding_headers_added_on_both_routes() {
    let setup = intercept(&[]).await;
    for headers in [vec![("x-c6o-intercept", "yes")], vec![]] {
        let answer = get(setup.proxy.http, "/", &headers).await;
        assert_eq!(
            answer.headers["x-seen-host"],
            "svc.test",
            "{}",
            answer.served_by()
        );
        assert_eq!(
            answer.headers["x-seen-forwarded-for"],
            "127.0.0.1",
            "{}",
            answer.served_by()
        );
        assert_eq!(
            answer.headers["x-seen-forwarded-host"],
            "svc.test",
            "{}",
            answer.served_by()
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set_on_both_routes() {
    let setup = intercept(&[]).await;
    for headers in [vec![("x-c6o-intercept", "yes")], vec![]] {
        let mut headers = headers;
        headers.extend([
            ("connection", "keep-alive, x-client-hop"),
            ("x-client-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-end-to-end", "stays"),
        ]);
        let answer = within(
            PROMPTLY,
            "an answer",
            get(setup.proxy.http, "/headers", &headers),
        )
        .await;
        let who = answer.served_by().to_owned();
        let seen: Vec<(&str, &str)> = answer
            .body
            .lines()
            .filter_map(|line| line.split_once(": "))
            .collect();
        let value = |name: &str| seen.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        for hop in ["x-client-hop", "keep-alive", "proxy-connection", "te"] {
            assert_eq!(
                value(hop),
                None,
                "{who} saw the hop-by-hop header {hop}: {seen:?}"
            );
        }
        assert!(
            value("connection").is_none_or(|v| !v.contains("x-client-hop")),
            "{who}: {seen:?}"
        );
        assert_eq!(value("x-end-to-end"), Some("stays"), "{who}: {seen:?}");
        assert_eq!(value("x-real-ip"), Some("127.0.0.1"), "{who}: {seen:?}");
        assert_eq!(value("x-forwarded-proto"), Some("http"), "{who}: {seen:?}");
        assert_eq!(
            value("forwarded"),
            Some("for=127.0.0.1;proto=http"),
            "{who}: {seen:?}"
        );
        // The app's own hop-by-hop headers stop at the proxy too.
        for hop in ["x-app-hop", "keep-alive"] {
            assert!(
                !answer.headers.contains_key(hop),
                "the client got {who}'s hop-by-hop header {hop}: {:?}",
                answer.headers
            );
        }
    }
}
