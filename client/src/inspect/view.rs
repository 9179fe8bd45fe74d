//! The JSON the API answers with: a summary per exchange for lists and events, the detail of
//! one (headers, bodies, timing, a `curl` command), secrets masked unless shown.

use std::time::Duration;

use serde::Serialize;

use super::body::BodyView;
use super::exchange::{version_name, CapturedBody, Exchange};
use super::mask::header_pairs;

/// One exchange in a list or an event.
#[derive(Debug, Serialize)]
pub(crate) struct Summary<'a> {
    id: u64,
    /// RFC 3339, milliseconds, UTC.
    started: String,
    method: &'a str,
    path: &'a str,
    /// `None` when no response head was sent.
    status: Option<u16>,
    duration_ms: f64,
    request_size: u64,
    response_size: Option<u64>,
    version: &'static str,
    streaming: bool,
    upgraded: bool,
    in_progress: bool,
    error: Option<&'a str>,
}

/// One exchange in full.
#[derive(Debug, Serialize)]
pub(crate) struct Detail<'a> {
    #[serde(flatten)]
    summary: Summary<'a>,
    url: String,
    request: MessageView,
    response: Option<MessageView>,
    timing: TimingView,
    curl: String,
}

/// Headers and body of one side.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    pub(crate) version: &'static str,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: BodyView,
}

#[derive(Debug, Serialize)]
struct TimingView {
    response_head_ms: Option<f64>,
    total_ms: f64,
}

pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl<'a> Summary<'a> {
    pub(crate) fn of(exchange: &'a Exchange) -> Self {
        Self {
            id: exchange.id,
            started: humantime::format_rfc3339_millis(exchange.started).to_string(),
            method: exchange.request.method.as_str(),
            path: exchange.path(),
            status: exchange.status().map(|status| status.as_u16()),
            duration_ms: millis(exchange.timing.total),
            request_size: exchange.request.body.size,
            response_size: exchange.response.as_ref().map(|r| r.body.size),
            version: version_name(exchange.request.version),
            streaming: exchange.streaming(),
            upgraded: exchange.upgraded,
            in_progress: exchange.in_progress,
            error: exchange.error.as_deref(),
        }
    }
}

impl<'a> Detail<'a> {
    pub(crate) fn of(exchange: &'a Exchange, show_secrets: bool) -> Self {
        let request = &exchange.request;
        Self {
            summary: Summary::of(exchange),
            url: exchange.url(),
            request: MessageView {
                status: None,
                version: version_name(request.version),
                headers: header_pairs(&request.headers, show_secrets),
                body: BodyView::of(&request.body, &request.headers),
            },
            response: exchange.response.as_ref().map(|response| MessageView {
                status: Some(response.status.as_u16()),
                version: version_name(response.version),
                headers: header_pairs(&response.headers, show_secrets),
                body: BodyView::of(&response.body, &response.headers),
            }),
            timing: TimingView {
                response_head_ms: exchange.timing.response_head.map(millis),
                total_ms: millis(exchange.timing.total),
            },
            curl: curl(exchange, show_secrets),
        }
    }
}

/// A `curl` command that sends the request again (to the URL the cluster's client used).
pub(crate) fn curl(exchange: &Exchange, show_secrets: bool) -> String {
    let request = &exchange.request;
    let mut command = format!("curl -X {} {}", request.method, quote(&exchange.url()));
    if request.version == http::Version::HTTP_2 {
        command.push_str(" --http2-prior-knowledge");
    }
    for (name, value) in header_pairs(&request.headers, show_secrets) {
        if name != "content-length" {
            command.push_str(&format!(" \\\n  -H {}", quote(&format!("{name}: {value}"))));
        }
    }
    command.push_str(&body_argument(&request.body));
    command
}

fn body_argument(body: &CapturedBody) -> String {
    match std::str::from_utf8(&body.kept) {
        _ if body.size == 0 => String::new(),
        Ok(text) if !body.truncated() => format!(" \\\n  --data-binary {}", quote(text)),
        _ => format!(
            " \\\n  --data-binary @body.bin  # the body ({} bytes) is binary or was cut at the capture cap",
            body.size
        ),
    }
}

/// `text` in single quotes for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::mask::MASKED;
    use crate::inspect::testing::exchange;

    #[test]
    fn curl_repeats_method_url_headers_and_body_with_secrets_masked() {
        let mut post = exchange(
            "POST",
            "/it's",
            200,
            &[("host", "echo.demo"), ("authorization", "Bearer s3cret")],
        );
        post.request.body = CapturedBody::whole("{\"a\":1}".into());
        let command = curl(&post, false);
        assert!(
            command.starts_with(r"curl -X POST 'http://echo.demo/it'\''s'"),
            "{command}"
        );
        assert!(command.contains(&format!("-H 'authorization: {MASKED}'")));
        assert!(command.contains(r#"--data-binary '{"a":1}'"#), "{command}");
        assert!(!command.contains("s3cret"));
        assert!(curl(&post, true).contains("Bearer s3cret"));
    }

    #[test]
    fn the_detail_masks_and_the_summary_counts() {
        let get = exchange("GET", "/x", 404, &[("cookie", "id=1")]);
        let json = serde_json::to_value(Detail::of(&get, false)).expect("valid test input");
        assert_eq!(json["status"], 404);
        assert_eq!(json["method"], "GET");
        assert_eq!(json["request"]["headers"][0][1], MASKED);
        assert_eq!(json["response"]["status"], 404);
        assert!(!json.to_string().contains("id=1"));
    }
}
