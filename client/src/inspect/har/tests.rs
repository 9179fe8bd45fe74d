//! The export checked against the HAR 1.2 specification's structure: every required field with
//! its type, on every object the spec defines.

use super::*;
use crate::inspect::mask::MASKED;
use crate::inspect::testing::exchange;
use bytes::Bytes;

/// A required field's type in HAR 1.2.
#[derive(Clone, Copy)]
enum Type {
    Str,
    Num,
    Obj,
    Arr,
}

fn require(value: &Value, at: &str, fields: &[(&str, Type)]) {
    assert!(value.is_object(), "{at} is an object: {value}");
    for (field, kind) in fields {
        let found = &value[field];
        let ok = match kind {
            Type::Str => found.is_string(),
            Type::Num => found.is_number(),
            Type::Obj => found.is_object(),
            Type::Arr => found.is_array(),
        };
        assert!(
            ok,
            "{at}.{field} is required with its HAR 1.2 type: {value}"
        );
    }
}

fn require_pairs(list: &Value, at: &str) {
    for pair in list.as_array().expect("a list") {
        require(pair, at, &[("name", Type::Str), ("value", Type::Str)]);
    }
}

/// Fails unless `har` has the structure HAR 1.2 requires.
fn validate(har: &Value) {
    use Type::*;
    let log = &har["log"];
    require(
        log,
        "log",
        &[("version", Str), ("creator", Obj), ("entries", Arr)],
    );
    assert_eq!(log["version"], "1.2");
    require(
        &log["creator"],
        "log.creator",
        &[("name", Str), ("version", Str)],
    );
    for entry in log["entries"].as_array().expect("entries") {
        require(
            entry,
            "entry",
            &[
                ("startedDateTime", Str),
                ("time", Num),
                ("request", Obj),
                ("response", Obj),
                ("cache", Obj),
                ("timings", Obj),
            ],
        );
        let started = entry["startedDateTime"].as_str().expect("a date");
        humantime::parse_rfc3339(started).expect("startedDateTime is ISO 8601");
        let request = &entry["request"];
        require(
            request,
            "request",
            &[
                ("method", Str),
                ("url", Str),
                ("httpVersion", Str),
                ("cookies", Arr),
                ("headers", Arr),
                ("queryString", Arr),
                ("headersSize", Num),
                ("bodySize", Num),
            ],
        );
        require_pairs(&request["cookies"], "request.cookies");
        require_pairs(&request["headers"], "request.headers");
        require_pairs(&request["queryString"], "request.queryString");
        if !request["postData"].is_null() {
            require(
                &request["postData"],
                "postData",
                &[("mimeType", Str), ("text", Str)],
            );
        }
        let response = &entry["response"];
        require(
            response,
            "response",
            &[
                ("status", Num),
                ("statusText", Str),
                ("httpVersion", Str),
                ("cookies", Arr),
                ("headers", Arr),
                ("content", Obj),
                ("redirectURL", Str),
                ("headersSize", Num),
                ("bodySize", Num),
            ],
        );
        require_pairs(&response["headers"], "response.headers");
        require(
            &response["content"],
            "content",
            &[("size", Num), ("mimeType", Str)],
        );
        let timings = &entry["timings"];
        require(
            timings,
            "timings",
            &[("send", Num), ("wait", Num), ("receive", Num)],
        );
        for timing in ["send", "wait", "receive"] {
            assert!(timings[timing].as_f64().expect("a number") >= 0.0);
        }
    }
}

#[test]
fn an_export_has_the_har_1_2_structure_and_keeps_what_was_captured() {
    let mut post = exchange(
        "POST",
        "/orders?id=7&q=a%20b",
        201,
        &[
            ("host", "shop.demo"),
            ("content-type", "application/json"),
            ("cookie", "session=s3cret; theme=dark"),
        ],
    );
    post.request.body = CapturedBody::whole(Bytes::from_static(br#"{"item":1}"#));
    let mut binary = exchange("GET", "/logo", 200, &[]);
    let response = binary.response.as_mut().expect("a response");
    response.body = CapturedBody {
        kept: Bytes::from_static(b"\x89PNG"),
        size: 4096,
    };
    let mut cancelled = exchange("GET", "/slow", 200, &[]);
    cancelled.response = None;
    cancelled.error = Some("cancelled by the cluster side".into());

    let har = document([&post, &binary, &cancelled], false);
    validate(&har);
    let entries = har["log"]["entries"].as_array().expect("valid test input");
    assert_eq!(entries.len(), 3);
    let request = &entries[0]["request"];
    assert_eq!(request["url"], "http://shop.demo/orders?id=7&q=a%20b");
    assert_eq!(
        request["queryString"],
        json!([{"name": "id", "value": "7"}, {"name": "q", "value": "a b"}])
    );
    assert_eq!(request["postData"]["text"], r#"{"item":1}"#);
    assert_eq!(request["cookies"], json!([]), "cookies are secrets");
    assert!(request["headers"].to_string().contains(MASKED));
    assert!(!har.to_string().contains("s3cret"));
    let content = &entries[1]["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    assert_eq!(content["size"], 4096);
    assert!(content["comment"]
        .as_str()
        .expect("valid test input")
        .contains("first 4 of 4096"));
    assert_eq!(entries[2]["response"]["status"], 0);

    let shown = document([&post], true);
    validate(&shown);
    assert_eq!(
        shown["log"]["entries"][0]["request"]["cookies"],
        json!([{"name": "session", "value": "s3cret"}, {"name": "theme", "value": "dark"}])
    );
}
