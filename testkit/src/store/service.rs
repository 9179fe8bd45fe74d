//! Service defaulting: the ClusterIP and NodePort allocation and the fields the API server
//! fills in.

use std::collections::BTreeSet;
use std::ops::{Range, RangeInclusive};

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::SERVICES;

/// The ports a NodePort may use (the API server's default `--service-node-port-range`).
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

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

/// Gives each port of a `NodePort` or `LoadBalancer` Service a node port: the one asked for, else
/// the one it had (`previous`, on an update), else the first free one in `pool`. Refuses a port
/// outside [`NODE_PORT_RANGE`] or taken by another Service (`taken`), with the API server's
/// messages. Other types have none.
pub fn node_ports(
    service: &mut Value,
    previous: Option<&Value>,
    pool: &Range<u16>,
    taken: &BTreeSet<u16>,
) -> Result<(), ApiError> {
    let name = service
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let exposed = matches!(
        service.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    );
    let had = |port: &Value| -> Option<Value> {
        previous?
            .pointer("/spec/ports")?
            .as_array()?
            .iter()
            .find(|p| p["port"] == port["port"] && p["protocol"] == port["protocol"])?
            .get("nodePort")
            .cloned()
    };
    let mut used = taken.clone();
    let mut problems = Vec::new();
    for (index, port) in service
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(port) = port.as_object_mut() else {
            continue;
        };
        if !exposed {
            port.remove("nodePort");
            continue;
        }
        let asked = port
            .get("nodePort")
            .cloned()
            .or_else(|| had(&Value::Object(port.clone())));
        let number = match asked.as_ref().and_then(Value::as_u64) {
            Some(number) => {
                let field = format!("spec.ports[{index}].nodePort");
                match u16::try_from(number)
                    .ok()
                    .filter(|n| NODE_PORT_RANGE.contains(n))
                {
                    None => {
                        problems.push(format!("{field}: Invalid value: {number}: provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORT_RANGE.start(), NODE_PORT_RANGE.end()));
                        continue;
                    }
                    Some(n) if used.contains(&n) => {
                        problems.push(format!(
                            "{field}: Invalid value: {n}: provided port is already allocated"
                        ));
                        continue;
                    }
                    Some(n) => n,
                }
            }
            None => match pool.clone().find(|n| !used.contains(n)) {
                Some(n) => n,
                None => {
                    problems.push(format!("spec.ports[{index}].nodePort: Internal error: range is full ({}-{} for this loopback cluster)", pool.start, pool.end - 1));
                    continue;
                }
            },
        };
        used.insert(number);
        port.insert("nodePort".into(), json!(number));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&SERVICES, &name, &problems))
    }
}
