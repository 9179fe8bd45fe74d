//! Reading and filling in object metadata: fields, uids, timestamps and owner references.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The string `metadata.<field>` of `object`; empty when missing.
pub fn field(object: &Value, field: &str) -> String {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The current time as an RFC 3339 timestamp, to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Whether `object` has an owner reference to the object with `uid`.
pub fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| owners.iter().any(|owner| owner["uid"] == uid))
}

/// Removes `object`'s owner references to the object with `uid`.
pub fn disown(object: &mut Value, uid: &str) {
    if let Some(owners) = object
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        owners.retain(|owner| owner["uid"] != uid);
    }
}

/// `object`'s metadata map, created empty if missing; 400 BadRequest if `object` or its metadata
/// is not a JSON object.
pub fn map(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    let metadata = object
        .as_object_mut()
        .expect("checked")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is not an object"))
}

/// A UUID-shaped, unique uid.
pub fn uid(revision: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos()) as u64;
    let mixed = nanos ^ revision.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        mixed & 0xfff,
        revision & 0xfff,
        revision
    )
}

/// The name for the `n`th object created with the `generateName` `prefix`.
pub fn generated_name(prefix: &str, n: u64) -> String {
    let suffix = format!("{:05x}", (n.wrapping_mul(0x9e37_79b9) >> 7) & 0xfffff);
    format!("{prefix}{suffix}")
}
