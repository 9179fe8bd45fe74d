//! Which requests go where, over both HTTP versions and on shared connections.

use bytes::Bytes;
use cz_e2e::client::{answer, get, http1, http2};
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
