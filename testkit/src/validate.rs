//! The validation a real API server would do for the fields czctl and kubectl write: names, port
//! names, and the required parts of Services.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::{Kind, NAMESPACES, SERVICES};

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// IANA service name: at most 15 characters, lower-case letters, digits and inner dashes, at
/// least one letter, no double dash.
fn is_port_name(name: &str) -> bool {
    is_dns_label(name)
        && name.len() <= 15
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.contains("--")
}

/// Checks `object` of `kind` named `name`.
pub fn object(kind: &Kind, name: &str, object: &Value) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    let label_named = std::ptr::eq(kind, &SERVICES) || std::ptr::eq(kind, &NAMESPACES);
    if label_named && !is_dns_label(name) {
        problems.push(format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
    } else if !is_dns_subdomain(name) {
        problems.push(format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
    }
    let port_names = |path: &str, ports: Option<&Value>, problems: &mut Vec<String>| {
        for (i, port) in ports
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(port_name) = port.get("name").and_then(Value::as_str) {
                if !is_port_name(port_name) {
                    problems.push(format!("{path}[{i}].name: Invalid value: \"{port_name}\": must be no more than 15 characters, lower case letters, digits and '-'"));
                }
            }
        }
    };
    if std::ptr::eq(kind, &SERVICES) {
        let ports = object.pointer("/spec/ports");
        if ports.and_then(Value::as_array).is_none_or(Vec::is_empty) {
            problems.push("spec.ports: Required value".into());
        }
        port_names("spec.ports", ports, &mut problems);
    }
    let pod_spec = object
        .pointer("/spec/template/spec")
        .or_else(|| object.pointer("/spec/containers").and(object.get("spec")));
    if let Some(containers) = pod_spec
        .and_then(|spec| spec.get("containers"))
        .and_then(Value::as_array)
    {
        for (i, container) in containers.iter().enumerate() {
            port_names(
                &format!("spec.containers[{i}].ports"),
                container.get("ports"),
                &mut problems,
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, name, &problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PODS;
    use serde_json::json;

    #[test]
    fn names_and_port_names_are_checked() {
        let service = |name: &str, port: &str| json!({"spec": {"ports": [{"name": port, "port": 80}]}, "metadata": {"name": name}});
        assert!(object(&SERVICES, "echo", &service("echo", "http")).is_ok());
        assert!(object(&SERVICES, "Echo", &service("Echo", "http")).is_err());
        assert!(
            object(&SERVICES, "a.b", &service("a.b", "http")).is_err(),
            "service names are labels"
        );
        let error = object(&SERVICES, "echo", &service("echo", "a-very-long-port-name"))
            .expect_err("too long");
        assert_eq!((error.code, error.reason), (422, "Invalid"));
        assert!(
            object(&SERVICES, "echo", &json!({"spec": {}})).is_err(),
            "ports are required"
        );
        let pod = json!({"spec": {"containers": [{"ports": [{"name": "metrics-endpoint1", "containerPort": 1}]}]}});
        assert!(object(&PODS, "p", &pod).is_err());
        assert!(object(&PODS, "p.q-1", &json!({"spec": {"containers": []}})).is_ok());
    }
}
