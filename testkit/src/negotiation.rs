//! Content negotiation for request bodies: what a client sent, by its `Content-Type`. JSON is
//! read as such; `application/vnd.kubernetes.protobuf`, which kubectl uses for built-in kinds
//! and whose use it does not give up on a 415 (client-go retries in JSON only for CBOR), is
//! decoded by [`crate::proto`] as far as the loopback cluster needs. Other media types get 415
//! `UnsupportedMediaType`, as from an API server.

use http::{header, Request};
use hyper::body::Incoming;
use serde_json::Value;

use crate::body::{parse_json, read_body};
use crate::proto;
use crate::resources::Kind;
use crate::store::ApiError;

/// The media types request bodies arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    Json,
    Protobuf,
}

impl MediaType {
    /// The media type of `request`'s body; JSON when unnamed, 415 when neither.
    fn of(request: &Request<Incoming>) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("application/json");
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json" | "" => Ok(Self::Json),
            proto::CONTENT_TYPE => Ok(Self::Protobuf),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format ({other}); the loopback cluster accepts application/json and, for some kinds, {}", proto::CONTENT_TYPE),
            )),
        }
    }
}

/// The `kind` object in the request body (a create's or an update's), as JSON.
pub async fn read_object(request: Request<Incoming>, kind: &Kind) -> Result<Value, ApiError> {
    let media_type = MediaType::of(&request)?;
    let body = read_body(request).await?;
    match media_type {
        MediaType::Json => parse_json(&body),
        MediaType::Protobuf => proto::objects::decode(kind, &body),
    }
}

/// The access review (by `resource`, e.g. `selfsubjectaccessreviews`) in the request body.
pub async fn read_review(request: Request<Incoming>, resource: &str) -> Result<Value, ApiError> {
    let media_type = MediaType::of(&request)?;
    let body = read_body(request).await?;
    match media_type {
        MediaType::Json => parse_json(&body),
        MediaType::Protobuf => proto::review(resource, &body),
    }
}
