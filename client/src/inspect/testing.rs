//! Exchanges for the inspector's unit tests.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::exchange::{CapturedBody, CapturedRequest, CapturedResponse, Exchange, Timing};
use super::headers::CapturedHeaders;

/// A finished HTTP/1.1 exchange, not yet numbered: `method path` with `headers` on both sides, answered `status`
/// in 12 ms (5 ms to the head), bodies empty.
pub(crate) fn exchange(
    method: &str,
    path: &str,
    status: u16,
    headers: &[(&str, &str)],
) -> Exchange {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid test input"),
            HeaderValue::from_str(value).expect("valid test input"),
        );
    }
    let map = CapturedHeaders::from_map(&map);
    Exchange {
        id: 0,
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        request: CapturedRequest {
            method: method.parse().expect("valid test input"),
            uri: path.parse().expect("valid test input"),
            version: Version::HTTP_11,
            headers: map.clone(),
            body: CapturedBody::default(),
        },
        response: Some(CapturedResponse {
            status: StatusCode::from_u16(status).expect("valid test input"),
            version: Version::HTTP_11,
            headers: map,
            body: CapturedBody::default(),
        }),
        timing: Timing {
            response_head: Some(Duration::from_millis(5)),
            total: Duration::from_millis(12),
        },
        upgraded: false,
        error: None,
        in_progress: false,
    }
}
