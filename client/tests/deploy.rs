//! `deploy/` as a platform team applies it: every manifest is a Kubernetes object its typed
//! k8s-openapi struct reads without dropping a field (an unknown or misspelt field would be
//! silently ignored by a lenient reader and refused by a strict API server), and
//! `kubectl apply -k deploy/` applies exactly those files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The Kubernetes manifests in `deploy/` (every YAML file but the kustomization), by file name.
fn manifests() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("readable"))
        })
        .filter(|(name, _)| name != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

/// The first place where `round_trip` lost or changed something of `original`, as a path.
fn first_difference(path: &str, original: &Value, round_trip: &Value) -> Option<String> {
    match (original, round_trip) {
        (Value::Object(original), Value::Object(round_trip)) => {
            original.iter().find_map(|(key, value)| {
                let path = format!("{path}.{key}");
                match round_trip.get(key) {
                    None => Some(format!(
                        "{path} (unknown field: the typed object dropped it)"
                    )),
                    Some(kept) => first_difference(&path, value, kept),
                }
            })
        }
        (Value::Array(original), Value::Array(round_trip))
            if original.len() == round_trip.len() =>
        {
            original
                .iter()
                .zip(round_trip)
                .enumerate()
                .find_map(|(i, (a, b))| first_difference(&format!("{path}[{i}]"), a, b))
        }
        _ if original == round_trip => None,
        _ => Some(format!("{path}: {original} became {round_trip}")),
    }
}

/// `document` read as `K` and written back, or where it lost something.
fn strictly<K: DeserializeOwned + Serialize>(document: &Value) -> Result<(), String> {
    let typed: K = serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
    let round_trip = serde_json::to_value(&typed).expect("a typed object serializes");
    match first_difference("", document, &round_trip) {
        Some(difference) => Err(difference),
        None => Ok(()),
    }
}

/// Checks `document` against its kind's typed struct.
fn check(document: &Value) -> Result<(), String> {
    match document["kind"].as_str().unwrap_or_default() {
        "Role" => strictly::<Role>(document),
        "RoleBinding" => strictly::<RoleBinding>(document),
        "ClusterRole" => strictly::<ClusterRole>(document),
        "ClusterRoleBinding" => strictly::<ClusterRoleBinding>(document),
        "NetworkPolicy" => strictly::<NetworkPolicy>(document),
        other => Err(format!("kind {other:?} has no typed check here: add it")),
    }
}

#[test]
fn every_manifest_reads_into_its_typed_object_without_losing_a_field() {
    let mut kinds = Vec::new();
    for (file, text) in manifests() {
        let documents: Vec<Value> =
            serde_saphyr::from_str_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for document in documents {
            let kind = document["kind"].as_str().unwrap_or_default().to_owned();
            if let Err(problem) = check(&document) {
                panic!("deploy/{file}, {kind}: {problem}");
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "NetworkPolicy",
            "Role",
            "RoleBinding"
        ]
    );
}

#[test]
fn a_misspelt_field_is_caught() {
    let document = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "r", "namespace": "demo"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verb": ["get"]}],
    });
    let problem = check(&document).expect_err("`verb` is not a field of a rule");
    assert!(
        problem.contains(".rules[0].verb (unknown field"),
        "{problem}"
    );
}

#[test]
fn kubectl_apply_k_applies_every_manifest() {
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).expect("readable"),
    )
    .expect("kustomization.yaml parses");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    let present: BTreeSet<String> = manifests().into_iter().map(|(name, _)| name).collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");

    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .expect("kubectl runs (Debian package `kubectl`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let built: Vec<Value> = serde_saphyr::from_str_multiple(&stdout).expect("kustomize's YAML");
    assert_eq!(built.len(), 5, "{stdout}");
    for document in &built {
        check(document).unwrap_or_else(|problem| panic!("kubectl kustomize: {problem}"));
    }
}
