//! Just enough of the Kubernetes protobuf encoding to read the access reviews kubectl posts
//! (`kubectl auth can-i` sends `application/vnd.kubernetes.protobuf`; the answer goes back as
//! JSON, which client-go accepts). Other kinds are not decoded.

use serde_json::{json, Map, Value};

use crate::store::ApiError;

/// The media type kubectl sends built-in kinds in.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// One field of a message: its number, and its bytes if length-delimited (`None` for varints).
type Field<'a> = (u64, Option<&'a [u8]>);

/// The fields of a message.
fn fields(mut bytes: &[u8]) -> Result<Vec<Field<'_>>, ApiError> {
    let malformed = || ApiError::bad_request("the protobuf request body is malformed");
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or_else(malformed)?;
        let value = match key & 7 {
            0 => {
                varint(&mut bytes).ok_or_else(malformed)?;
                None
            }
            2 => {
                let length = usize::try_from(varint(&mut bytes).ok_or_else(malformed)?)
                    .map_err(|_| malformed())?;
                let value = bytes.get(..length).ok_or_else(malformed)?;
                bytes = &bytes[length..];
                Some(value)
            }
            _ => return Err(malformed()),
        };
        fields.push((key >> 3, value));
    }
    Ok(fields)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The length-delimited field `number` of a message, if present.
fn field(bytes: &[u8], number: u64) -> Result<Option<&[u8]>, ApiError> {
    Ok(fields(bytes)?
        .into_iter()
        .find(|(n, value)| *n == number && value.is_some())
        .and_then(|(_, value)| value))
}

/// A message of string fields, as JSON with the given names by field number (1-based).
fn strings(bytes: &[u8], names: &[&str]) -> Result<Value, ApiError> {
    let mut object = Map::new();
    for (number, value) in fields(bytes)? {
        let name = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| names.get(i));
        if let (Some(name), Some(value)) = (name, value) {
            object.insert((*name).to_owned(), json!(String::from_utf8_lossy(value)));
        }
    }
    Ok(Value::Object(object))
}

/// A `SelfSubjectAccessReview`, `SelfSubjectRulesReview` or `SelfSubjectReview` (by
/// `resource`) in the protobuf envelope (`k8s\0` + `runtime.Unknown`), as the JSON object its
/// spec would be.
pub fn review(resource: &str, body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| ApiError::bad_request("the protobuf request body lacks the k8s magic"))?;
    let raw = field(unknown, 2)?.unwrap_or_default();
    let spec = field(raw, 2)?.unwrap_or_default();
    let (kind, spec) = match resource {
        "selfsubjectaccessreviews" => {
            let mut json = json!({});
            if let Some(attributes) = field(spec, 1)? {
                json["resourceAttributes"] = strings(
                    attributes,
                    &[
                        "namespace",
                        "verb",
                        "group",
                        "version",
                        "resource",
                        "subresource",
                        "name",
                    ],
                )?;
            }
            if let Some(attributes) = field(spec, 2)? {
                json["nonResourceAttributes"] = strings(attributes, &["path", "verb"])?;
            }
            ("SelfSubjectAccessReview", json)
        }
        "selfsubjectrulesreviews" => ("SelfSubjectRulesReview", strings(spec, &["namespace"])?),
        // A SelfSubjectReview has no spec: who asks is the question.
        _ => {
            return Ok(
                json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {}}),
            )
        }
    };
    Ok(json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {}, "spec": spec}))
}
