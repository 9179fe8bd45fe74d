//! What a client cannot make the proxy forward: forwarding headers of its own (unless it is a
//! trusted proxy), `Connection:` tokens that drop end-to-end headers, methods the tunnel cannot
//! carry.

use bytes::Bytes;
use cz_e2e::client::{answer, get, http1, Answer};
use http::Request;
use http_body_util::Empty;

use crate::intercept;

/// A client's claims about where its request comes from.
const SPOOFED: [(&str, &str); 6] = [
    ("x-forwarded-for", "203.0.113.7"),
    ("x-real-ip", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=203.0.113.7;host=evil.example;proto=https"),
    ("x-end-to-end", "stays"),
];

/// Every value of `name` the app listed in its `/headers` answer.
fn seen<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
    answer
        .body
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .collect()
}

/// `GET /headers` with `headers`, on the laptop's route too when `laptop`.
async fn headers_seen(
    http: std::net::SocketAddr,
    laptop: bool,
    headers: &[(&str, &str)],
) -> Answer {
    let mut headers = headers.to_vec();
    if laptop {
        headers.push(("x-c6o-intercept", "yes"));
    }
    let answer = get(http, "/headers", &headers).await;
    let expected = if laptop { "laptop" } else { "cluster" };
    assert_eq!(answer.served_by(), expected, "{answer:?}");
    answer
}

#[tokio::test]
async fn a_client_s_forwarding_headers_are_replaced_on_both_routes() {
    let setup = intercept(&[]).await;
    for laptop in [true, false] {
        let answer = headers_seen(setup.proxy.http, laptop, &SPOOFED).await;
        let who = answer.served_by();
        assert_eq!(seen(&answer, "x-forwarded-for"), ["127.0.0.1"], "{who}");
        assert_eq!(seen(&answer, "x-real-ip"), ["127.0.0.1"], "{who}");
        assert_eq!(seen(&answer, "x-forwarded-proto"), ["http"], "{who}");
        assert_eq!(seen(&answer, "x-forwarded-host"), ["svc.test"], "{who}");
        assert_eq!(
            seen(&answer, "forwarded"),
            ["for=127.0.0.1;proto=http"],
            "{who}"
        );
        assert_eq!(seen(&answer, "x-end-to-end"), ["stays"], "{who}");
    }
}

#[tokio::test]
async fn a_trusted_proxy_s_forwarding_headers_are_appended_to_on_both_routes() {
    let setup = intercept(&["--trusted-proxies=10.0.0.0/8,127.0.0.0/8"]).await;
    for laptop in [true, false] {
        let answer = headers_seen(setup.proxy.http, laptop, &SPOOFED).await;
        let who = answer.served_by();
        assert_eq!(
            seen(&answer, "x-forwarded-for"),
            ["203.0.113.7, 127.0.0.1"],
            "{who}"
        );
        assert_eq!(seen(&answer, "x-real-ip"), ["203.0.113.7"], "{who}");
        assert_eq!(seen(&answer, "x-forwarded-proto"), ["https"], "{who}");
        assert_eq!(seen(&answer, "x-forwarded-host"), ["evil.example"], "{who}");
        assert_eq!(
            seen(&answer, "forwarded"),
            [
                "for=203.0.113.7;host=evil.example;proto=https",
                "for=127.0.0.1;proto=http"
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn connection_tokens_never_remove_host_authorization_the_intercept_or_forwarding_headers() {
    let setup = intercept(&["--trusted-proxies=127.0.0.1"]).await;
    for laptop in [true, false] {
        let tokens = "x-c6o-intercept, x_c6o_intercept, Authorization, host, x-forwarded-for, \
                      x-forwarded-host, x-forwarded-proto, x-real-ip, forwarded, x-client-hop";
        let mut headers = vec![
            ("connection", tokens),
            ("authorization", "Bearer secret"),
            ("x-client-hop", "1"),
        ];
        headers.extend(SPOOFED);
        // Routed to the laptop, and the laptop's app sees why.
        let answer = headers_seen(setup.proxy.http, laptop, &headers).await;
        let who = answer.served_by();
        let intercept_header: &[&str] = if laptop { &["yes"] } else { &[] };
        assert_eq!(seen(&answer, "x-c6o-intercept"), intercept_header, "{who}");
        assert_eq!(seen(&answer, "authorization"), ["Bearer secret"], "{who}");
        assert_eq!(seen(&answer, "host"), ["svc.test"], "{who}");
        assert_eq!(seen(&answer, "x-real-ip"), ["203.0.113.7"], "{who}");
        assert_eq!(seen(&answer, "x-forwarded-host"), ["evil.example"], "{who}");
        assert_eq!(seen(&answer, "forwarded").len(), 2, "{who}");
        assert_eq!(seen(&answer, "x-client-hop"), [] as [&str; 0], "{who}");
    }
}

/// `method /` on a new connection, with the intercept header when `laptop`.
async fn send_method(http: std::net::SocketAddr, method: &str, laptop: bool) -> Answer {
    let mut sender = http1::<Empty<Bytes>>(http).await;
    let mut request = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "svc.test");
    if laptop {
        request = request.header("x-c6o-intercept", "yes");
    }
    let request = request.body(Empty::new()).expect("request");
    let response = cz_e2e::within(cz_e2e::PROMPTLY, "an answer", sender.send_request(request))
        .await
        .expect("a response");
    answer(response).await
}

#[tokio::test]
async fn methods_up_to_255_bytes_reach_both_routes_and_longer_ones_get_400() {
    let setup = intercept(&[]).await;
    let longest = "M".repeat(cz_shared::protocol::MAX_METHOD_LEN);
    let too_long = format!("{longest}X");
    for laptop in [true, false] {
        let answer = send_method(setup.proxy.http, &longest, laptop).await;
        let expected = if laptop { "laptop" } else { "cluster" };
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("{expected} {longest} /"));

        let answer = send_method(setup.proxy.http, &too_long, laptop).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(
            answer.headers[cz_shared::headers::ERROR_HEADER],
            "method-too-long",
            "{answer:?}"
        );
    }
}
