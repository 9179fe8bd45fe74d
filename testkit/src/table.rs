//! `meta.k8s.io/v1` Tables, which `kubectl get` asks for and prints as columns.

use serde_json::{json, Value};

use crate::resources::{self, Kind};

fn age(object: &Value) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let Some(seconds) = created.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs()) else {
        return "<unknown>".into();
    };
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        7200..172_800 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn text(object: &Value, pointer: &str) -> Value {
    object.pointer(pointer).cloned().unwrap_or(json!("<none>"))
}

fn columns_and_cells(
    kind: &Kind,
    object: &Value,
) -> (Vec<(&'static str, &'static str)>, Vec<Value>) {
    let name = text(object, "/metadata/name");
    if std::ptr::eq(kind, &resources::PODS) {
        let statuses = object
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready = statuses.iter().filter(|s| s["ready"] == true).count();
        let total = object
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let waiting = statuses
            .iter()
            .find_map(|s| s.pointer("/state/waiting/reason").cloned());
        let status = waiting.unwrap_or_else(|| text(object, "/status/phase"));
        (
            vec![
                ("Name", "string"),
                ("Ready", "string"),
                ("Status", "string"),
                ("IP", "string"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(format!("{ready}/{total}")),
                status,
                text(object, "/status/podIP"),
                json!(age(object)),
            ],
        )
    } else if std::ptr::eq(kind, &resources::SERVICES) {
        let ports: Vec<String> = object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let node_port = p["nodePort"]
                    .as_u64()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default();
                format!(
                    "{}{node_port}/{}",
                    p["port"],
                    p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                )
            })
            .collect();
        (
            vec![
                ("Name", "string"),
                ("Type", "string"),
                ("Cluster-IP", "string"),
                ("Ports", "string"),
                ("Age", "string"),
            ],
            vec![
                name,
                text(object, "/spec/type"),
                text(object, "/spec/clusterIP"),
                json!(ports.join(",")),
                json!(age(object)),
            ],
        )
    } else if std::ptr::eq(kind, &resources::DEPLOYMENTS) {
        let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
        (
            vec![
                ("Name", "string"),
                ("Ready", "string"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
                ("Age", "string"),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    number("/status/readyReplicas"),
                    number("/spec/replicas")
                )),
                json!(number("/status/updatedReplicas")),
                json!(number("/status/availableReplicas")),
                json!(age(object)),
            ],
        )
    } else {
        (
            vec![("Name", "string"), ("Age", "string")],
            vec![name, json!(age(object))],
        )
    }
}

/// A Table of `items` of `kind`.
pub fn render(kind: &Kind, items: &[Value], revision: u64) -> Value {
    let columns = columns_and_cells(kind, &json!({})).0;
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "cells": columns_and_cells(kind, item).1,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": columns.iter().map(|(name, kind)| json!({"name": name, "type": kind, "format": if *name == "Name" { "name" } else { "" }, "description": name, "priority": 0})).collect::<Vec<_>>(),
        "rows": rows,
    })
}
