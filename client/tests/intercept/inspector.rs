//! The request inspector end to end: the real `czctl service intercept` on the loopback cluster,
//! its page driven in a real headless Chromium (Debian's, over WebDriver) — a request appears
//! live, opens with its secrets masked, replays as captured and edited, and exports as HAR — and
//! its JSON API as scripts use it.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::browser::{self, Browser};
use crate::support::http::{LaptopApp, INTERCEPT, REQUEST_DEADLINE};
use crate::support::{Setup, CZCTL_DEADLINE};

/// The start of a masked header value.
const MASKED: &str = "[masked by czctl";
/// The request the test sends through the Service, and then finds in the page.
const ORDER_PATH: &str = "/orders?id=7";
const ORDER_BODY: &str = r#"{"item":1}"#;
const SECRET: &str = "Bearer s3cret-token";

/// Sends `request` to `address` on a fresh connection; the status and body.
async fn send(address: &str, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
    tokio::time::timeout(REQUEST_DEADLINE, async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer from {address}")))
}

/// `POST /orders?id=7` with a JSON body and a credential, through the Service to the laptop.
async fn post_order(service: &str) -> Result<(), String> {
    let request = Request::post(ORDER_PATH)
        .header("host", "echo.demo")
        .header(INTERCEPT.0, INTERCEPT.1)
        .header("authorization", SECRET)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(ORDER_BODY.as_bytes())))
        .expect("a request");
    let (status, body) = send(service, request).await?;
    let body = String::from_utf8_lossy(&body);
    (status == StatusCode::OK && body.contains("laptop"))
        .then_some(())
        .ok_or(format!("{status} {body}"))
}

/// `GET path` from the inspector at `address` with `host` as the Host header.
async fn inspector_get(address: &str, path: &str, host: &str) -> (StatusCode, Value) {
    let request = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let (status, body) = send(address, request).await.expect("the inspector answers");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_page_shows_replays_and_exports_intercepted_requests_live() {
    if !browser::available() {
        return;
    }
    let setup = Setup::start().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &["--inspect", "0"]).await;
    let summary = czctl.seen.last().cloned().expect("the summary line");
    let url = summary
        .split("Inspect intercepted requests at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| panic!("no inspector address in the summary line: {summary}"));
    let address = url.trim_start_matches("http://").to_owned();
    setup.laptop_answers("the laptop app to answer").await;

    let browser = Browser::start().await;
    browser.open(&url).await;
    browser
        .wait_for_text("#live", "the page to follow new requests", |text| {
            text == "live"
        })
        .await;
    // Sent after the page loaded: it must appear without a reload.
    let service = setup.service_address.clone();
    cz_testkit::eventually("the order to reach the laptop", CZCTL_DEADLINE, || async {
        post_order(&service).await.ok()
    })
    .await;
    browser
        .wait_for_text("#list tbody", "the order to appear in the list", |text| {
            text.contains(ORDER_PATH) && text.contains("POST")
        })
        .await;

    // Its detail: the URL, the JSON body pretty-printed, the credential masked.
    browser
        .click(&format!("#list tbody td.path[title='{ORDER_PATH}']"))
        .await;
    browser
        .wait_for_text("#detail-title", "the order's detail", |text| {
            text.starts_with("POST http://echo.demo") && text.ends_with(ORDER_PATH)
        })
        .await;
    let detail = browser.text("#detail-pane").await.expect("the detail");
    assert!(detail.contains("\"item\": 1"), "pretty JSON: {detail}");
    assert!(
        detail.contains(MASKED) && !detail.contains("s3cret"),
        "{detail}"
    );

    // Replayed as captured, then edited: the new response beside the old.
    browser.click("#replay").await;
    browser
        .wait_for_text("#replayed", "the replayed response", |text| {
            text.contains("200") && text.contains("laptop") && text.contains("/orders")
        })
        .await;
    browser.click("#edit").await;
    browser.type_into("#edit-path", "/orders/edited").await;
    browser.click("#replay-edited").await;
    browser
        .wait_for_text("#replayed", "the edited replay's response", |text| {
            text.contains("/orders/edited")
        })
        .await;
    let original = browser
        .text("#replay-result")
        .await
        .expect("both responses");
    assert!(original.contains("Original response"), "{original}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspector.png");
    std::fs::write(&shot, browser.screenshot().await).expect("write the screenshot");
    eprintln!("screenshot of the inspector: {}", shot.display());

    // The HAR export, as the browser downloads it.
    browser.click("#export-all").await;
    let har: Value =
        serde_json::from_slice(&browser.downloaded(".har").await).expect("the HAR is JSON");
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().expect("entries");
    let order = entries
        .iter()
        .find(|entry| entry["request"]["method"] == "POST")
        .unwrap_or_else(|| panic!("the order in the HAR: {har}"));
    assert_eq!(
        order["request"]["url"],
        format!("http://echo.demo{ORDER_PATH}")
    );
    assert_eq!(order["request"]["postData"]["text"], ORDER_BODY);
    assert_eq!(order["response"]["status"], 200);
    assert!(
        !har.to_string().contains("s3cret"),
        "secrets masked in exports"
    );
    browser.close().await;

    // The API: filtered lists (replays are not intercepted requests, so one POST), and nothing
    // for a page that reached it through another name.
    let (status, posts) = inspector_get(&address, "/api/requests?method=POST", &address).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        posts["requests"].as_array().map(Vec::len),
        Some(1),
        "{posts}"
    );
    let id = posts["requests"][0]["id"].as_u64().expect("an id");
    let (_, one) = inspector_get(&address, &format!("/api/requests/{id}"), &address).await;
    assert!(
        one["curl"]
            .as_str()
            .is_some_and(|curl| curl.contains("--data-binary")),
        "{one}"
    );
    let port = address.rsplit(':').next().expect("a port");
    let (status, _) = inspector_get(
        &address,
        "/api/requests",
        &format!("attacker.example:{port}"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a rebound name is refused");

    setup.stop_cleanly(czctl).await;
}
