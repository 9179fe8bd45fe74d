//! Objects in protobuf, decoded by a schema of the fields kubectl's generators fill in: a
//! Deployment as `kubectl create deployment NAME --image=I [--replicas N] [--port P]` builds it.
//!
//! Go's generated encoders write every non-pointer field, so a body carries many empty strings,
//! zeros and empty messages; those are the JSON `omitempty` absences and are dropped. A field the
//! schema does not know that carries a value is refused (415, naming the field) rather than lost:
//! such objects can be sent as JSON (`kubectl create -f FILE`).

use serde_json::{json, Map, Value};

use super::{fields, malformed, unwrap, Wire};
use crate::resources::{Kind, DEPLOYMENTS};
use crate::store::ApiError;

/// What one field holds.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A string; empty is absent.
    Text,
    /// An integer; zero is absent.
    Number,
    /// An optional integer (a pointer in Go): present when sent, even at zero.
    Optional,
    /// A boolean; false is absent.
    Flag,
    /// A map of strings (repeated key/value entries).
    TextMap,
    /// A nested message.
    Message(&'static [FieldSpec]),
    /// Read by the server from elsewhere (e.g. `status`, which a create resets): skipped.
    Ignored,
}

/// One field of a message schema: protobuf number, JSON name, shape, and whether it repeats.
#[derive(Debug, Clone, Copy)]
struct FieldSpec {
    number: u64,
    name: &'static str,
    shape: Shape,
    repeated: bool,
}

const fn one(number: u64, name: &'static str, shape: Shape) -> FieldSpec {
    FieldSpec {
        number,
        name,
        shape,
        repeated: false,
    }
}

const fn many(number: u64, name: &'static str, shape: Shape) -> FieldSpec {
    FieldSpec {
        number,
        name,
        shape,
        repeated: true,
    }
}

/// `metav1.ObjectMeta`, as far as a create sets it.
const OBJECT_META: &[FieldSpec] = &[
    one(1, "name", Shape::Text),
    one(2, "generateName", Shape::Text),
    one(3, "namespace", Shape::Text),
    one(11, "labels", Shape::TextMap),
    one(12, "annotations", Shape::TextMap),
];

const LABEL_SELECTOR_REQUIREMENT: &[FieldSpec] = &[
    one(1, "key", Shape::Text),
    one(2, "operator", Shape::Text),
    many(3, "values", Shape::Text),
];

const LABEL_SELECTOR: &[FieldSpec] = &[
    one(1, "matchLabels", Shape::TextMap),
    many(
        2,
        "matchExpressions",
        Shape::Message(LABEL_SELECTOR_REQUIREMENT),
    ),
];

const CONTAINER_PORT: &[FieldSpec] = &[
    one(1, "name", Shape::Text),
    one(2, "hostPort", Shape::Number),
    one(3, "containerPort", Shape::Number),
    one(4, "protocol", Shape::Text),
    one(5, "hostIP", Shape::Text),
];

const ENV_VAR: &[FieldSpec] = &[one(1, "name", Shape::Text), one(2, "value", Shape::Text)];

const CONTAINER: &[FieldSpec] = &[
    one(1, "name", Shape::Text),
    one(2, "image", Shape::Text),
    many(3, "command", Shape::Text),
    many(4, "args", Shape::Text),
    one(5, "workingDir", Shape::Text),
    many(6, "ports", Shape::Message(CONTAINER_PORT)),
    many(7, "env", Shape::Message(ENV_VAR)),
    one(13, "terminationMessagePath", Shape::Text),
    one(14, "imagePullPolicy", Shape::Text),
    one(16, "stdin", Shape::Flag),
    one(17, "stdinOnce", Shape::Flag),
    one(18, "tty", Shape::Flag),
    one(20, "terminationMessagePolicy", Shape::Text),
];

const POD_SPEC: &[FieldSpec] = &[
    many(2, "containers", Shape::Message(CONTAINER)),
    one(3, "restartPolicy", Shape::Text),
    one(4, "terminationGracePeriodSeconds", Shape::Optional),
    one(5, "activeDeadlineSeconds", Shape::Optional),
    one(6, "dnsPolicy", Shape::Text),
    one(8, "serviceAccountName", Shape::Text),
    one(19, "schedulerName", Shape::Text),
];

const POD_TEMPLATE_SPEC: &[FieldSpec] = &[
    one(1, "metadata", Shape::Message(OBJECT_META)),
    one(2, "spec", Shape::Message(POD_SPEC)),
];

const DEPLOYMENT_STRATEGY: &[FieldSpec] = &[one(1, "type", Shape::Text)];

const DEPLOYMENT_SPEC: &[FieldSpec] = &[
    one(1, "replicas", Shape::Optional),
    one(2, "selector", Shape::Message(LABEL_SELECTOR)),
    one(3, "template", Shape::Message(POD_TEMPLATE_SPEC)),
    one(4, "strategy", Shape::Message(DEPLOYMENT_STRATEGY)),
    one(5, "minReadySeconds", Shape::Number),
    one(6, "revisionHistoryLimit", Shape::Optional),
    one(7, "paused", Shape::Flag),
    one(9, "progressDeadlineSeconds", Shape::Optional),
];

const DEPLOYMENT: &[FieldSpec] = &[
    one(1, "metadata", Shape::Message(OBJECT_META)),
    one(2, "spec", Shape::Message(DEPLOYMENT_SPEC)),
    one(3, "status", Shape::Ignored),
];

/// The schema objects of `kind` are decoded by, if any.
fn schema(kind: &Kind) -> Option<&'static [FieldSpec]> {
    std::ptr::eq(kind, &DEPLOYMENTS).then_some(DEPLOYMENT)
}

/// An object of `kind` in the protobuf envelope, as JSON; 415 `UnsupportedMediaType` for kinds
/// without a schema and for fields outside it.
pub fn decode(kind: &Kind, body: &[u8]) -> Result<Value, ApiError> {
    let schema = schema(kind).ok_or_else(|| {
        unsupported(format!(
            "the loopback cluster reads {} only as JSON, not protobuf",
            kind.plural
        ))
    })?;
    let (type_meta, raw) = unwrap(body)?;
    let mut object = message(raw, schema, kind.kind)?;
    object.extend(type_meta);
    Ok(Value::Object(object))
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(415, "UnsupportedMediaType", message)
}

/// A message by its schema; `path` names it in errors.
fn message(bytes: &[u8], schema: &[FieldSpec], path: &str) -> Result<Map<String, Value>, ApiError> {
    let mut object = Map::new();
    for (number, wire) in fields(bytes)? {
        let Some(spec) = schema.iter().find(|spec| spec.number == number) else {
            if is_zero(wire) {
                continue;
            }
            return Err(unsupported(format!(
                "the loopback cluster does not read field {number} of {path} from protobuf; send the object as JSON (kubectl create -f FILE)"
            )));
        };
        let path = format!("{path}.{}", spec.name);
        let Some(value) = field_value(spec.shape, wire, &path)? else {
            continue;
        };
        if spec.repeated {
            match object.entry(spec.name).or_insert_with(|| json!([])) {
                Value::Array(items) => items.push(value),
                _ => return Err(malformed()),
            }
        } else if let (Shape::TextMap, Some(Value::Object(entries))) =
            (spec.shape, object.get_mut(spec.name))
        {
            if let Value::Object(entry) = value {
                entries.extend(entry);
            }
        } else {
            object.insert(spec.name.to_owned(), value);
        }
    }
    Ok(object)
}

/// One field's value as JSON, or `None` when it is an absent (empty or zero) one.
fn field_value(shape: Shape, wire: Wire<'_>, path: &str) -> Result<Option<Value>, ApiError> {
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_request(format!("{path} is not UTF-8")))
    };
    Ok(match (shape, wire) {
        (Shape::Ignored, _) => None,
        (Shape::Text, Wire::Bytes(bytes)) => Some(json!(text(bytes)?)).filter(|t| t != ""),
        // int32 and int64 values travel as two's-complement varints.
        (Shape::Number, Wire::Varint(number)) => (number != 0).then(|| json!(number as i64)),
        (Shape::Optional, Wire::Varint(number)) => Some(json!(number as i64)),
        (Shape::Flag, Wire::Varint(flag)) => (flag != 0).then_some(json!(true)),
        (Shape::TextMap, Wire::Bytes(entry)) => {
            let mut key = String::new();
            let mut value = String::new();
            for (number, wire) in fields(entry)? {
                match (number, wire) {
                    (1, Wire::Bytes(bytes)) => key = text(bytes)?,
                    (2, Wire::Bytes(bytes)) => value = text(bytes)?,
                    _ => return Err(malformed()),
                }
            }
            Some(json!({ key: value }))
        }
        (Shape::Message(schema), Wire::Bytes(bytes)) => {
            Some(Value::Object(message(bytes, schema, path)?)).filter(|m| m != &json!({}))
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "the protobuf request body is malformed: {path} has the wrong wire type"
            )))
        }
    })
}

/// Whether a value carries nothing: a zero, or bytes that are empty or a message of such values
/// (an empty string or a message whose fields all have their defaults).
fn is_zero(wire: Wire<'_>) -> bool {
    match wire {
        Wire::Varint(number) => number == 0,
        Wire::Bytes(bytes) => {
            fields(bytes).is_ok_and(|fields| fields.into_iter().all(|(_, wire)| is_zero(wire)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create deployment web --image=example/echo --replicas 2 --port 8080` sent
    /// (kubectl v1.32), with the envelope.
    const CREATE_DEPLOYMENT: &str = include_str!("create-deployment.hex");

    fn body(hex: &str) -> Vec<u8> {
        let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16).expect("hex")
            })
            .collect()
    }

    #[test]
    fn reads_what_kubectl_create_deployment_sends() {
        let deployment = decode(&DEPLOYMENTS, &body(CREATE_DEPLOYMENT)).expect("decoded");
        assert_eq!(
            deployment,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "echo", "image": "example/echo", "ports": [{"containerPort": 8080}]}]},
                    },
                },
            })
        );
    }

    /// `raw` as the object in a protobuf envelope.
    fn envelope(raw: &[u8]) -> Vec<u8> {
        let mut body = b"k8s\0\x12".to_vec();
        body.push(u8::try_from(raw.len()).expect("a short test object"));
        body.extend_from_slice(raw);
        body
    }

    #[test]
    fn refuses_fields_it_does_not_read_and_kinds_without_a_schema() {
        // Field 99 of a Deployment: skipped when empty, refused when it carries a value.
        let empty = decode(&DEPLOYMENTS, &envelope(&[0x9a, 0x06, 0x00])).expect("nothing lost");
        assert_eq!(empty, json!({}));
        let refused = decode(&DEPLOYMENTS, &envelope(&[0x9a, 0x06, 0x01, b'x']))
            .expect_err("a value the schema does not read");
        assert_eq!(refused.code, 415);
        assert!(
            refused.message.contains("field 99 of Deployment"),
            "{}",
            refused.message
        );
        let refused = decode(&crate::resources::PODS, &body(CREATE_DEPLOYMENT))
            .expect_err("pods are read only as JSON");
        assert_eq!(refused.code, 415);
    }

    #[test]
    fn garbage_and_short_input_are_bad_requests() {
        for garbage in [
            &b""[..],
            b"k8s\0\x0a",
            b"k8s\0\x12\xff\xff",
            b"{\"json\": 1}",
        ] {
            assert_eq!(
                decode(&DEPLOYMENTS, garbage).expect_err("refused").code,
                400
            );
        }
    }
}
