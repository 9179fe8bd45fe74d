//! Request bodies in and JSON responses out: the size limit, reading a body, and turning a
//! value or an [`ApiError`] into a response.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::store::ApiError;

/// Largest request body accepted (etcd's object limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A response body: a JSON document or a stream (watch events, logs).
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// `value` as a JSON response with status `code`.
pub fn json_response(code: StatusCode, value: &Value) -> Response<ApiBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `error` as the `Status` response an API server sends.
pub fn error_response(error: &ApiError) -> Response<ApiBody> {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.status(),
    )
}

/// The whole request body (413 `RequestEntityTooLarge` past the limit).
pub async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("could not read the request body: {error}"),
            )
        })?
        .to_bytes())
}

/// The request body as JSON (`null` when empty), whatever its content type says: for patches
/// and delete options, which clients send only as JSON.
pub async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    parse_json(&read_body(request).await?)
}

/// `body` as JSON (`null` when empty).
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
    })
}
