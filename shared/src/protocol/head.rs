//! The frames that carry a message's heads, trailers and end: how each side writes them and how
//! the other decodes them, failing on short or malformed input instead of panicking.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::{FrameHeader, FrameKind, ProtocolError, FRAME_HEADER_LEN, MAX_METHOD_LEN};

/// Appends a frame header followed by a payload written by `write_payload`.
fn put_frame(buf: &mut BytesMut, kind: FrameKind, write_payload: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_slice(&[0; FRAME_HEADER_LEN]);
    write_payload(buf);
    let len = (buf.len() - start - FRAME_HEADER_LEN) as u32;
    buf[start..start + FRAME_HEADER_LEN].copy_from_slice(&FrameHeader { kind, len }.encode());
}

fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    buf.put_u32(headers.len() as u32);
    for (name, value) in headers {
        buf.put_u16(name.as_str().len() as u16);
        buf.put_slice(name.as_str().as_bytes());
        buf.put_u32(value.len() as u32);
        buf.put_slice(value.as_bytes());
    }
}

fn version_code(version: Version) -> u8 {
    match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 10,
        Version::HTTP_2 => 20,
        Version::HTTP_3 => 30,
        _ => 11,
    }
}

fn version_from_code(code: u8) -> Result<Version, ProtocolError> {
    Ok(match code {
        0 => Version::HTTP_09,
        10 => Version::HTTP_10,
        11 => Version::HTTP_11,
        20 => Version::HTTP_2,
        30 => Version::HTTP_3,
        _ => return Err(ProtocolError::Malformed("HTTP version")),
    })
}

/// Appends a request head frame: `version: u8 | method: u8 len | uri: u32 len | headers`. The
/// method must be at most [`MAX_METHOD_LEN`] bytes long (callers refuse longer ones).
pub fn put_request_head(buf: &mut BytesMut, parts: &http::request::Parts) {
    put_frame(buf, FrameKind::RequestHead, |buf| {
        buf.put_u8(version_code(parts.version));
        let method = parts.method.as_str();
        debug_assert!(
            method.len() <= MAX_METHOD_LEN,
            "callers refuse longer methods"
        );
        buf.put_u8(method.len() as u8);
        buf.put_slice(method.as_bytes());
        let len_at = buf.len();
        buf.put_u32(0);
        use std::fmt::Write;
        write!(buf, "{}", parts.uri).expect("writing to BytesMut cannot fail");
        let len = (buf.len() - len_at - 4) as u32;
        buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        put_headers(buf, &parts.headers);
    });
}

/// Appends a response head frame: `version: u8 | status: u16 | headers`.
pub fn put_response_head(buf: &mut BytesMut, parts: &http::response::Parts) {
    put_frame(buf, FrameKind::ResponseHead, |buf| {
        buf.put_u8(version_code(parts.version));
        buf.put_u16(parts.status.as_u16());
        put_headers(buf, &parts.headers);
    });
}

/// Appends a trailers frame.
pub fn put_trailers(buf: &mut BytesMut, trailers: &HeaderMap) {
    put_frame(buf, FrameKind::Trailers, |buf| put_headers(buf, trailers));
}

/// Appends an end-of-body frame.
pub fn put_end(buf: &mut BytesMut) {
    put_frame(buf, FrameKind::End, |_| {});
}

/// A cursor over a frame payload that fails instead of panicking on short input.
struct Payload(Bytes);

impl Payload {
    fn need(&self, n: usize, what: &'static str) -> Result<(), ProtocolError> {
        if self.0.remaining() < n {
            return Err(ProtocolError::Malformed(what));
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        self.need(2, what)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        self.need(4, what)?;
        Ok(self.0.get_u32())
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, ProtocolError> {
        self.need(len, what)?;
        Ok(self.0.split_to(len))
    }

    fn headers(&mut self) -> Result<HeaderMap, ProtocolError> {
        let count = self.u32("header count")? as usize;
        // Each header takes at least six bytes: never trust a count to size an allocation.
        let mut headers = HeaderMap::with_capacity(count.min(self.0.remaining() / 6));
        for _ in 0..count {
            let len = self.u16("header name")? as usize;
            self.need(len, "header name")?;
            // Parsed in place: a name is copied (if at all) into a `HeaderName` of its own.
            let name = crate::headers::header_name(&self.0[..len])
                .map_err(|_| ProtocolError::Malformed("header name"))?;
            self.0.advance(len);
            let len = self.u32("header value")? as usize;
            let value = HeaderValue::from_maybe_shared(self.bytes(len, "header value")?)
                .map_err(|_| ProtocolError::Malformed("header value"))?;
            headers.append(name, value);
        }
        self.end()?;
        Ok(headers)
    }

    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.has_remaining() {
            return Err(ProtocolError::Malformed("trailing bytes in frame"));
        }
        Ok(())
    }
}

/// Decodes the payload of a [`FrameKind::RequestHead`] frame.
pub fn decode_request_head(payload: Bytes) -> Result<Request<()>, ProtocolError> {
    let mut payload = Payload(payload);
    let version = version_from_code(payload.u8("HTTP version")?)?;
    let len = payload.u8("method")? as usize;
    let method = Method::from_bytes(&payload.bytes(len, "method")?)
        .map_err(|_| ProtocolError::Malformed("method"))?;
    let len = payload.u32("URI")? as usize;
    let uri = Uri::from_maybe_shared(payload.bytes(len, "URI")?)
        .map_err(|_| ProtocolError::Malformed("URI"))?;
    let headers = payload.headers()?;
    let mut request = Request::new(());
    *request.version_mut() = version;
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Decodes the payload of a [`FrameKind::ResponseHead`] frame.
pub fn decode_response_head(payload: Bytes) -> Result<Response<()>, ProtocolError> {
    let mut payload = Payload(payload);
    let version = version_from_code(payload.u8("HTTP version")?)?;
    let status = StatusCode::from_u16(payload.u16("status")?)
        .map_err(|_| ProtocolError::Malformed("status"))?;
    let headers = payload.headers()?;
    let mut response = Response::new(());
    *response.version_mut() = version;
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Decodes the payload of a [`FrameKind::Trailers`] frame.
pub fn decode_trailers(payload: Bytes) -> Result<HeaderMap, ProtocolError> {
    Payload(payload).headers()
}
