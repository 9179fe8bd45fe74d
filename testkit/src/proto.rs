//! Just enough of the Kubernetes protobuf encoding to read what kubectl posts in it: the access
//! reviews (`kubectl auth can-i`) and, through [`objects`], the objects its generators build
//! (`kubectl create deployment`). Answers go back as JSON, which client-go accepts; other kinds
//! are not decoded.

pub mod objects;

use serde_json::{json, Map, Value};

use crate::store::ApiError;

/// The media type kubectl sends built-in kinds in.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// One field's value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire<'a> {
    /// A varint (integers, booleans).
    Varint(u64),
    /// Length-delimited bytes (strings, messages, map entries).
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    /// The bytes of a length-delimited value.
    fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Self::Bytes(bytes) => Some(bytes),
            Self::Varint(_) => None,
        }
    }
}

/// One field of a message: its number and value.
type Field<'a> = (u64, Wire<'a>);

/// The error for a body that is not the protobuf it claims to be.
fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf request body is malformed")
}

/// The fields of a message.
fn fields(mut bytes: &[u8]) -> Result<Vec<Field<'_>>, ApiError> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or_else(malformed)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes).ok_or_else(malformed)?),
            2 => {
                let length = usize::try_from(varint(&mut bytes).ok_or_else(malformed)?)
                    .map_err(|_| malformed())?;
                let value = bytes.get(..length).ok_or_else(malformed)?;
                bytes = &bytes[length..];
                Wire::Bytes(value)
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
        .find_map(|(n, value)| value.bytes().filter(|_| n == number)))
}

/// A message of string fields, as JSON with the given names by field number (1-based).
fn strings(bytes: &[u8], names: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let mut object = Map::new();
    for (number, value) in fields(bytes)? {
        let name = usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| names.get(i));
        if let (Some(name), Some(value)) = (name, value.bytes()) {
            object.insert((*name).to_owned(), json!(String::from_utf8_lossy(value)));
        }
    }
    Ok(object)
}

/// The `apiVersion` and `kind` and the raw object of a body in the protobuf envelope (`k8s\0` +
/// `runtime.Unknown`).
fn unwrap(body: &[u8]) -> Result<(Map<String, Value>, &[u8]), ApiError> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| ApiError::bad_request("the protobuf request body lacks the k8s magic"))?;
    let type_meta = strings(
        field(unknown, 1)?.unwrap_or_default(),
        &["apiVersion", "kind"],
    )?;
    Ok((type_meta, field(unknown, 2)?.unwrap_or_default()))
}

/// A `SelfSubjectAccessReview`, `SelfSubjectRulesReview` or `SelfSubjectReview` (by
/// `resource`) in the protobuf envelope (`k8s\0` + `runtime.Unknown`), as the JSON object its
/// spec would be.
pub fn review(resource: &str, body: &[u8]) -> Result<Value, ApiError> {
    let (_, raw) = unwrap(body)?;
    let spec = field(raw, 2)?.unwrap_or_default();
    let (kind, spec) = match resource {
        "selfsubjectaccessreviews" => {
            let mut json = json!({});
            if let Some(attributes) = field(spec, 1)? {
                json["resourceAttributes"] = Value::Object(strings(
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
                )?);
            }
            if let Some(attributes) = field(spec, 2)? {
                json["nonResourceAttributes"] =
                    Value::Object(strings(attributes, &["path", "verb"])?);
            }
            ("SelfSubjectAccessReview", json)
        }
        "selfsubjectrulesreviews" => (
            "SelfSubjectRulesReview",
            Value::Object(strings(spec, &["namespace"])?),
        ),
        // A SelfSubjectReview has no spec: who asks is the question.
        _ => {
            return Ok(
                json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {}}),
            )
        }
    };
    Ok(json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {}, "spec": spec}))
}
