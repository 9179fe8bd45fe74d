//! Pod Security admission, as the API server's built-in admission plugin enforces it: a
//! namespace labelled `pod-security.kubernetes.io/enforce: baseline|restricted` refuses pods
//! that violate that level, with the real message
//! (`pods "x" is forbidden: violates PodSecurity "restricted:latest": ...`).
//!
//! The checks and their wording follow the Pod Security Standards' policy code; the check order
//! is that of their identifiers. Only `enforce` is honoured (`warn` and `audit` are not).

use serde_json::Value;

use crate::resources::NAMESPACES;
use crate::store::{ApiError, Store};

/// The namespace label that selects the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The namespace label that pins the level's version (`latest` when absent).
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";

/// Capabilities the baseline level lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types the restricted level allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Baseline,
    Restricted,
}

/// Admits `pod` (named `name`) into `namespace`, or refuses it with 403 `Forbidden` when the
/// namespace enforces a level the pod violates.
pub fn admit(store: &Store, namespace: &str, name: &str, pod: &Value) -> Result<(), ApiError> {
    let Ok(namespace) = store.get(&NAMESPACES, "", namespace) else {
        return Ok(());
    };
    let label = |key: &str| {
        namespace
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (level, level_name) = match label(ENFORCE_LABEL).as_deref() {
        None | Some("privileged") => return Ok(()),
        Some("baseline") => (Level::Baseline, "baseline"),
        // An unknown level is enforced as the strictest, as the admission plugin does.
        Some(_) => (Level::Restricted, "restricted"),
    };
    let version = label(ENFORCE_VERSION_LABEL).unwrap_or_else(|| "latest".to_owned());
    let violations = violations(pod, level);
    if violations.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "pods \"{name}\" is forbidden: violates PodSecurity \"{level_name}:{version}\": {}",
            violations.join(", ")
        ),
    ))
}

/// `container "a"` or `containers "a", "b"`.
fn subjects(noun: &str, names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let plural = if names.len() == 1 { "" } else { "s" };
    format!("{noun}{plural} {}", quoted.join(", "))
}

/// The pod's containers: init, regular and ephemeral.
fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| pod.pointer(&format!("/spec/{field}")))
        .filter_map(Value::as_array)
        .flatten()
        .collect()
}

fn name(container: &Value) -> String {
    container["name"].as_str().unwrap_or_default().to_owned()
}

/// Names of the containers for which `violates` holds.
fn offending(pod: &Value, violates: impl Fn(&Value) -> bool) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|c| violates(c))
        .map(name)
        .collect()
}

/// One `reason (detail; detail)` entry per violated check, in the order of the checks' ids.
fn violations(pod: &Value, level: Level) -> Vec<String> {
    let restricted = level == Level::Restricted;
    let checks: [(bool, &str, Vec<String>); 10] = [
        (
            restricted,
            "allowPrivilegeEscalation != false",
            allow_privilege_escalation(pod),
        ),
        (true, "non-default capabilities", baseline_capabilities(pod)),
        (
            restricted,
            "unrestricted capabilities",
            restricted_capabilities(pod),
        ),
        (true, "host namespaces", host_namespaces(pod)),
        (true, "hostPath volumes", host_path_volumes(pod)),
        (true, "hostPort", host_ports(pod)),
        (true, "privileged", privileged(pod)),
        (
            restricted,
            "restricted volume types",
            restricted_volumes(pod),
        ),
        (restricted, "runAsNonRoot != true", run_as_non_root(pod)),
        (restricted, "runAsUser=0", run_as_user(pod)),
    ];
    let mut found: Vec<String> = checks
        .into_iter()
        .filter(|(applies, _, details)| *applies && !details.is_empty())
        .map(|(_, reason, details)| format!("{reason} ({})", details.join("; ")))
        .collect();
    let seccomp = seccomp_profile(pod, level);
    if !seccomp.is_empty() {
        found.push(format!("seccompProfile ({})", seccomp.join("; ")));
    }
    found
}

fn allow_privilege_escalation(pod: &Value) -> Vec<String> {
    let names = offending(pod, |c| {
        c.pointer("/securityContext/allowPrivilegeEscalation") != Some(&Value::Bool(false))
    });
    if names.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} must set securityContext.allowPrivilegeEscalation=false",
        subjects("container", &names)
    )]
}

fn added_capabilities(container: &Value) -> Vec<&str> {
    container
        .pointer("/securityContext/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn must_not_add(container: &Value, allowed: &[&str]) -> Option<String> {
    let added: Vec<String> = added_capabilities(container)
        .into_iter()
        .filter(|cap| !allowed.contains(cap))
        .map(|cap| format!("\"{cap}\""))
        .collect();
    (!added.is_empty()).then(|| {
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            subjects("container", &[name(container)]),
            added.join(", ")
        )
    })
}

fn baseline_capabilities(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter_map(|c| must_not_add(c, BASELINE_CAPABILITIES))
        .collect()
}

fn restricted_capabilities(pod: &Value) -> Vec<String> {
    let not_dropping = offending(pod, |c| {
        !c.pointer("/securityContext/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|drop| drop.iter().any(|cap| cap == "ALL"))
    });
    let mut details = Vec::new();
    if !not_dropping.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            subjects("container", &not_dropping)
        ));
    }
    details.extend(
        containers(pod)
            .into_iter()
            .filter_map(|c| must_not_add(c, &["NET_BIND_SERVICE"])),
    );
    details
}

fn host_namespaces(pod: &Value) -> Vec<String> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|field| pod.pointer(&format!("/spec/{field}")) == Some(&Value::Bool(true)))
        .map(|field| format!("{field}=true"))
        .collect();
    if set.is_empty() {
        Vec::new()
    } else {
        vec![set.join(", ")]
    }
}

fn volumes(pod: &Value) -> impl Iterator<Item = (&str, &str)> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let name = volume["name"].as_str().unwrap_or_default();
            let source = volume.as_object()?.keys().find(|k| *k != "name")?;
            Some((name, source.as_str()))
        })
}

fn host_path_volumes(pod: &Value) -> Vec<String> {
    let names: Vec<String> = volumes(pod)
        .filter(|(_, source)| *source == "hostPath")
        .map(|(name, _)| name.to_owned())
        .collect();
    if names.is_empty() {
        Vec::new()
    } else {
        vec![subjects("volume", &names)]
    }
}

fn host_ports(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter_map(|c| {
            let ports: Vec<String> = c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("hostPort").and_then(Value::as_u64))
                .filter(|port| *port != 0)
                .map(|port| port.to_string())
                .collect();
            let (verb, noun) = if ports.len() == 1 {
                ("uses", "hostPort")
            } else {
                ("use", "hostPorts")
            };
            (!ports.is_empty()).then(|| {
                format!(
                    "{} {verb} {noun} {}",
                    subjects("container", &[name(c)]),
                    ports.join(", ")
                )
            })
        })
        .collect()
}

fn privileged(pod: &Value) -> Vec<String> {
    let names = offending(pod, |c| {
        c.pointer("/securityContext/privileged") == Some(&Value::Bool(true))
    });
    if names.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} must not set securityContext.privileged=true",
        subjects("container", &names)
    )]
}

fn restricted_volumes(pod: &Value) -> Vec<String> {
    volumes(pod)
        .filter(|(_, source)| !RESTRICTED_VOLUMES.contains(source))
        .map(|(name, source)| {
            format!(
                "{} uses restricted volume type \"{source}\"",
                subjects("volume", &[name.to_owned()])
            )
        })
        .collect()
}

fn run_as_non_root(pod: &Value) -> Vec<String> {
    let pod_level = pod.pointer("/spec/securityContext/runAsNonRoot");
    let mut details = Vec::new();
    if pod_level == Some(&Value::Bool(false)) {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_owned());
    }
    let explicit_false = offending(pod, |c| {
        c.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(false))
    });
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            subjects("container", &explicit_false)
        ));
    }
    if pod_level != Some(&Value::Bool(true)) {
        let unset = offending(pod, |c| {
            c.pointer("/securityContext/runAsNonRoot").is_none()
        });
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                subjects("container", &unset)
            ));
        }
    }
    details
}

fn run_as_user(pod: &Value) -> Vec<String> {
    let zero = Some(&Value::from(0));
    let mut details = Vec::new();
    if pod.pointer("/spec/securityContext/runAsUser") == zero {
        details.push("pod must not set runAsUser=0".to_owned());
    }
    let names = offending(pod, |c| c.pointer("/securityContext/runAsUser") == zero);
    if !names.is_empty() {
        details.push(format!(
            "{} must not set runAsUser=0",
            subjects("container", &names)
        ));
    }
    details
}

/// Baseline forbids `Unconfined`; restricted also requires `RuntimeDefault` or `Localhost`, on
/// the pod or on every container.
fn seccomp_profile(pod: &Value, level: Level) -> Vec<String> {
    let profile = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let pod_level = profile(pod, "/spec/securityContext/seccompProfile/type");
    let mut details = Vec::new();
    if pod_level.as_deref() == Some("Unconfined") {
        details.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_owned(),
        );
    }
    let unconfined = offending(pod, |c| {
        profile(c, "/securityContext/seccompProfile/type").as_deref() == Some("Unconfined")
    });
    if !unconfined.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            subjects("container", &unconfined)
        ));
    }
    let pod_allowed = matches!(pod_level.as_deref(), Some("RuntimeDefault" | "Localhost"));
    if level == Level::Restricted && !pod_allowed {
        let unset = offending(pod, |c| {
            profile(c, "/securityContext/seccompProfile/type").is_none()
        });
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                subjects("container", &unset)
            ));
        }
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_bare_pod_violates_restricted_as_the_api_server_words_it() {
        let bare = pod(json!({"containers": [{"name": "app", "image": "x"}]}));
        assert_eq!(
            violations(&bare, Level::Restricted).join(", "),
            "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert!(violations(&bare, Level::Baseline).is_empty());
    }

    #[test]
    fn a_locked_down_pod_passes_restricted() {
        let locked = pod(json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            }}],
            "volumes": [{"name": "tls", "secret": {"secretName": "s"}}],
        }));
        assert_eq!(violations(&locked, Level::Restricted), Vec::<String>::new());
    }

    #[test]
    fn baseline_refuses_host_access_and_privilege() {
        let risky = pod(json!({
            "hostNetwork": true,
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}]}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        }));
        assert_eq!(
            violations(&risky, Level::Baseline),
            [
                "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"a\" uses hostPort 80)",
                "privileged (container \"a\" must not set securityContext.privileged=true)",
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ]
        );
        assert!(violations(&risky, Level::Restricted).contains(
            &"restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")"
                .to_owned()
        ));
    }
}
