//! Export as HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>), the format browsers'
//! developer tools and HTTP tools import. Secrets are masked unless shown; bodies carry what was
//! captured, with a comment when the cap cut them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::exchange::{version_name, CapturedBody, Exchange};
use super::headers::CapturedHeaders;
use super::mask::{header_pairs, is_secret};
use super::view::millis;

/// The HAR 1.2 document of `exchanges`.
pub(crate) fn document<'a>(
    exchanges: impl IntoIterator<Item = &'a Exchange>,
    show_secrets: bool,
) -> Value {
    let entries: Vec<Value> = exchanges
        .into_iter()
        .map(|exchange| entry(exchange, show_secrets))
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "czctl", "version": env!("CARGO_PKG_VERSION")},
            "entries": entries,
        }
    })
}

fn entry(exchange: &Exchange, show_secrets: bool) -> Value {
    let timing = exchange.timing;
    let total = millis(timing.total);
    let wait = timing.response_head.map_or(total, millis);
    let mut entry = json!({
        "startedDateTime": humantime::format_rfc3339_millis(exchange.started).to_string(),
        "time": total,
        "request": request(exchange, show_secrets),
        "response": response(exchange, show_secrets),
        "cache": {},
        "timings": {"send": 0, "wait": wait, "receive": (total - wait).max(0.0)},
        "comment": format!("czctl inspector #{}", exchange.id),
    });
    if let Some(error) = &exchange.error {
        entry["_error"] = json!(error);
    }
    entry
}

fn request(exchange: &Exchange, show_secrets: bool) -> Value {
    let request = &exchange.request;
    let query: Vec<Value> = request
        .uri
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect()
        })
        .unwrap_or_default();
    let mut har = json!({
        "method": request.method.as_str(),
        "url": exchange.url(),
        "httpVersion": version_name(request.version),
        "cookies": cookies(&request.headers, "cookie", show_secrets),
        "headers": headers(&request.headers, show_secrets),
        "queryString": query,
        "headersSize": -1,
        "bodySize": request.body.size,
    });
    if request.body.size > 0 {
        let (text, encoding) = body_text(&request.body);
        let mut post = json!({"mimeType": mime_type(&request.headers), "text": text});
        if let Some(encoding) = encoding {
            post["_encoding"] = json!(encoding);
        }
        if let Some(comment) = cut_comment(&request.body) {
            post["comment"] = json!(comment);
        }
        har["postData"] = post;
    }
    har
}

fn response(exchange: &Exchange, show_secrets: bool) -> Value {
    let Some(response) = &exchange.response else {
        // HAR has no absent response: browsers write status 0 for one that never came.
        return json!({
            "status": 0, "statusText": "", "httpVersion": version_name(exchange.request.version),
            "cookies": [], "headers": [], "content": {"size": 0, "mimeType": ""},
            "redirectURL": "", "headersSize": -1, "bodySize": -1,
        });
    };
    let (text, encoding) = body_text(&response.body);
    let mut content = json!({
        "size": response.body.size,
        "mimeType": mime_type(&response.headers),
        "text": text,
    });
    if let Some(encoding) = encoding {
        content["encoding"] = json!(encoding);
    }
    if let Some(comment) = cut_comment(&response.body) {
        content["comment"] = json!(comment);
    }
    let location = response
        .headers
        .get("location")
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    json!({
        "status": response.status.as_u16(),
        "statusText": response.status.canonical_reason().unwrap_or_default(),
        "httpVersion": version_name(response.version),
        "cookies": cookies(&response.headers, "set-cookie", show_secrets),
        "headers": headers(&response.headers, show_secrets),
        "content": content,
        "redirectURL": location,
        "headersSize": -1,
        "bodySize": response.body.size,
    })
}

fn headers(headers: &CapturedHeaders, show_secrets: bool) -> Vec<Value> {
    header_pairs(headers, show_secrets)
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// The cookies of `Cookie` (`a=1; b=2`) or of each `Set-Cookie` (`a=1; Path=/`); none when
/// secrets are masked.
fn cookies(headers: &CapturedHeaders, name: &str, show_secrets: bool) -> Vec<Value> {
    if !show_secrets && is_secret(name) {
        return Vec::new();
    }
    let set_cookie = name == "set-cookie";
    headers
        .get_all(name)
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| {
            let pairs: Vec<&str> = if set_cookie {
                value.split(';').take(1).collect()
            } else {
                value.split(';').collect()
            };
            pairs.into_iter().filter_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                Some(json!({"name": name, "value": value}))
            })
        })
        .collect()
}

fn mime_type(headers: &CapturedHeaders) -> String {
    headers
        .get("content-type")
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default()
}

/// The kept bytes as text, or base64 (and so the encoding) when they are not UTF-8.
fn body_text(body: &CapturedBody) -> (String, Option<&'static str>) {
    match std::str::from_utf8(&body.kept) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (BASE64.encode(&body.kept), Some("base64")),
    }
}

fn cut_comment(body: &CapturedBody) -> Option<String> {
    body.truncated().then(|| {
        format!(
            "czctl kept the first {} of {} bytes (the capture cap)",
            body.kept.len(),
            body.size
        )
    })
}

#[cfg(test)]
mod tests;
