//! Service defaulting: the ClusterIP allocation and the fields the API server fills in.

use serde_json::{json, Value};

/// The `n`th ClusterIP in 127.`octet`.0.0/16.
pub fn cluster_ip(octet: u8, n: u32) -> String {
    format!("127.{octet}.{}.{}", n / 250, n % 250 + 1)
}

/// What the API server fills in on Services: type, ClusterIP, protocols and target ports.
pub fn defaults(service: &mut Value, cluster_ip: String) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("type").or_insert_with(|| json!("ClusterIP"));
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("clusterIP".into(), json!(cluster_ip));
    }
    let ip = spec["clusterIP"].clone();
    spec.insert("clusterIPs".into(), json!([ip]));
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let number = port["port"].clone();
        if let Some(port) = port.as_object_mut() {
            port.entry("protocol").or_insert_with(|| json!("TCP"));
            port.entry("targetPort").or_insert(number);
        }
    }
}
