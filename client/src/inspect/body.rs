//! How a captured body is shown: JSON pretty-printed, text as text, gRPC as its length-prefixed
//! messages, anything else as bytes (base64, which the page shows as hex) with its size.

use super::headers::CapturedHeaders;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;

use super::exchange::CapturedBody;

/// What a body holds, as far as its captured bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BodyKind {
    Empty,
    Json,
    Text,
    Grpc,
    Binary,
}

/// A body as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct BodyView {
    /// Every byte that passed.
    pub(crate) size: u64,
    /// The bytes kept (at most the cap).
    pub(crate) kept: usize,
    /// Bytes past the cap were counted, not kept.
    pub(crate) truncated: bool,
    pub(crate) kind: BodyKind,
    /// The kept bytes as text (JSON and text bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// JSON, pretty-printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pretty: Option<String>,
    /// The kept bytes, base64 (gRPC and binary bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) base64: Option<String>,
    /// gRPC's length-prefixed messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) frames: Option<Vec<GrpcFrame>>,
}

/// One gRPC message: `compressed flag | length (4 bytes, big endian) | message`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub(crate) struct GrpcFrame {
    pub(crate) compressed: bool,
    /// The length its prefix declares.
    pub(crate) length: u32,
    /// The message bytes kept, base64.
    pub(crate) base64: String,
    /// Whether all `length` bytes were captured.
    pub(crate) complete: bool,
}

impl BodyView {
    /// The view of `body`, whose message carried `headers`.
    pub(crate) fn of(body: &CapturedBody, headers: &CapturedHeaders) -> Self {
        let content_type = headers
            .get_str("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = &body.kept[..];
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        let pretty = text
            .as_deref()
            .filter(|_| content_type.contains("json") || looks_like_json(bytes))
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .and_then(|value| serde_json::to_string_pretty(&value).ok());
        let kind = if body.size == 0 {
            BodyKind::Empty
        } else if content_type.starts_with("application/grpc") {
            BodyKind::Grpc
        } else if pretty.is_some() {
            BodyKind::Json
        } else if text.as_deref().is_some_and(is_readable) {
            BodyKind::Text
        } else {
            BodyKind::Binary
        };
        let textual = matches!(kind, BodyKind::Json | BodyKind::Text);
        let binary = matches!(kind, BodyKind::Grpc | BodyKind::Binary);
        Self {
            size: body.size,
            kept: bytes.len(),
            truncated: body.truncated(),
            kind,
            text: text.filter(|_| textual),
            pretty,
            base64: binary.then(|| BASE64.encode(bytes)),
            frames: (kind == BodyKind::Grpc).then(|| grpc_frames(bytes)),
        }
    }
}

fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|byte| !byte.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Text a person can read: no control characters but whitespace.
fn is_readable(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// The length-prefixed messages in `bytes`; the last may be cut short by the cap.
pub(crate) fn grpc_frames(mut bytes: &[u8]) -> Vec<GrpcFrame> {
    let mut frames = Vec::new();
    while let [flag, l0, l1, l2, l3, rest @ ..] = bytes {
        let length = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
        let available = rest.len().min(length as usize);
        frames.push(GrpcFrame {
            compressed: *flag == 1,
            length,
            base64: BASE64.encode(&rest[..available]),
            complete: available == length as usize,
        });
        bytes = &rest[available..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn view(content_type: &str, bytes: &'static [u8]) -> BodyView {
        let mut headers = http::HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(
                "content-type",
                content_type.parse().expect("valid test input"),
            );
        }
        let headers = CapturedHeaders::from_map(&headers);
        BodyView::of(&CapturedBody::whole(Bytes::from_static(bytes)), &headers)
    }

    #[test]
    fn json_is_pretty_printed_and_keeps_its_raw_text() {
        let json = view("application/json", br#"{"a":[1,2]}"#);
        assert_eq!(json.kind, BodyKind::Json);
        assert_eq!(json.text.as_deref(), Some(r#"{"a":[1,2]}"#));
        assert!(json
            .pretty
            .expect("valid test input")
            .contains("\n  \"a\": [\n"));
        // Undeclared JSON is recognised; declared JSON that does not parse is text.
        assert_eq!(view("", b" [1]").kind, BodyKind::Json);
        assert_eq!(view("application/json", b"{cut").kind, BodyKind::Text);
    }

    #[test]
    fn text_binary_and_empty_bodies() {
        let text = view("text/plain", b"hello\nworld");
        assert_eq!(
            (text.kind, text.text.as_deref()),
            (BodyKind::Text, Some("hello\nworld"))
        );
        let binary = view("application/octet-stream", b"\x00\x01\xff");
        assert_eq!(binary.kind, BodyKind::Binary);
        assert_eq!(binary.base64.as_deref(), Some("AAH/"));
        assert!(binary.text.is_none());
        assert_eq!(view("text/plain", b"").kind, BodyKind::Empty);
    }

    #[test]
    fn grpc_bodies_are_split_into_their_messages() {
        let body = b"\x00\x00\x00\x00\x02hi\x01\x00\x00\x00\x05abc";
        let grpc = view("application/grpc+proto", body);
        assert_eq!(grpc.kind, BodyKind::Grpc);
        assert_eq!(
            grpc.frames.expect("valid test input"),
            vec![
                GrpcFrame {
                    compressed: false,
                    length: 2,
                    base64: BASE64.encode("hi"),
                    complete: true
                },
                GrpcFrame {
                    compressed: true,
                    length: 5,
                    base64: BASE64.encode("abc"),
                    complete: false
                },
            ]
        );
    }
}
