//! Who a pod's process runs as. When the testkit runs as root (as in CI), a container runs as
//! its `runAsUser`/`runAsGroup` (container settings over the pod's), with the pod's `fsGroup`
//! and `supplementalGroups` as supplementary groups, and without privilege escalation when
//! `allowPrivilegeEscalation: false` — so a process that could not read its files on a real
//! node cannot here either. Unset, the user is root and the group 0, as a container runtime
//! starts an image without a `USER`. As another user the testkit cannot switch identities, and
//! processes run as the testkit's own user.
//!
//! The switch goes through util-linux `setpriv` (the workspace forbids `unsafe`, which a
//! `pre_exec` `setgroups` would need).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The program that switches identities.
const SETPRIV: &str = "setpriv";

/// A container process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    no_new_privileges: bool,
}

fn id(value: Option<&Value>) -> Option<u32> {
    value
        .and_then(Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
}

/// The pod's `fsGroup`, which owns its Secret and ConfigMap volume files.
pub fn fs_group(pod: &Value) -> Option<u32> {
    id(pod.pointer("/spec/securityContext/fsGroup"))
}

/// Whether this process runs as root, and can therefore start processes as other users.
pub fn is_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

impl RunAs {
    /// The identity `container` of `pod` runs as.
    pub fn of(pod: &Value, container: &Value) -> Self {
        let setting = |field: &str| {
            id(container.pointer(&format!("/securityContext/{field}")))
                .or_else(|| id(pod.pointer(&format!("/spec/securityContext/{field}"))))
        };
        let mut groups: Vec<u32> = fs_group(pod).into_iter().collect();
        groups.extend(
            pod.pointer("/spec/securityContext/supplementalGroups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| id(Some(g))),
        );
        groups.dedup();
        Self {
            uid: setting("runAsUser").unwrap_or(0),
            gid: setting("runAsGroup").unwrap_or(0),
            groups,
            no_new_privileges: container.pointer("/securityContext/allowPrivilegeEscalation")
                == Some(&Value::Bool(false)),
        }
    }

    /// The command line that runs `program` as this identity (as the testkit's own user when it
    /// is not root).
    pub fn command_line(&self, program: &Path) -> Vec<OsString> {
        if !is_root() {
            return vec![program.into()];
        }
        let mut line: Vec<OsString> = vec![
            SETPRIV.into(),
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
        ];
        if self.groups.is_empty() {
            line.push("--clear-groups".into());
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            line.push(format!("--groups={}", groups.join(",")).into());
        }
        if self.no_new_privileges {
            line.push("--no-new-privs".into());
        }
        line.extend(["--".into(), program.into()]);
        line
    }

    /// Explains a failure to start a process as this identity.
    pub fn spawn_error(&self, error: std::io::Error) -> std::io::Error {
        if is_root() && error.kind() == std::io::ErrorKind::NotFound {
            return std::io::Error::new(
                error.kind(),
                format!("the loopback cluster runs pod processes as their runAsUser through `{SETPRIV}` (util-linux), which is not installed: install util-linux"),
            );
        }
        error
    }
}

/// `binary`, at a path every user can reach: the path itself when every directory on it is
/// searchable by others and the file is readable and executable by them, otherwise a hard link
/// (or copy) in `dir`, so pods running as another user can start it.
pub fn reachable_binary(binary: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).map(|m| m.permissions().mode());
        let binary = std::fs::canonicalize(binary)?;
        let reachable = mode(&binary)? & 0o005 == 0o005
            && binary
                .ancestors()
                .skip(1)
                .all(|dir| mode(dir).is_ok_and(|m| m & 0o001 != 0));
        if reachable || !is_root() {
            return Ok(binary);
        }
        let shared = dir.join(binary.file_name().unwrap_or_default());
        if std::fs::hard_link(&binary, &shared).is_err() {
            std::fs::copy(&binary, &shared)?;
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))?;
        Ok(shared)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(binary.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[cfg(unix)]
    #[test]
    fn a_binary_behind_a_private_directory_is_shared_for_pod_users() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("cz-testkit-run-as-{}", std::process::id()));
        let (private, shared) = (root.join("private"), root.join("shared"));
        std::fs::create_dir_all(&private).expect("private dir");
        std::fs::create_dir_all(&shared).expect("shared dir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let binary = private.join("cz-proxy");
        std::fs::write(&binary, b"#!/bin/sh\n").expect("binary");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let reachable = reachable_binary(&binary, &shared).expect("reachable");
        let canonical = std::fs::canonicalize(&binary).expect("canonical");
        if is_root() {
            assert_eq!(reachable, shared.join("cz-proxy"));
            assert_eq!(std::fs::read(&reachable).expect("shared"), b"#!/bin/sh\n");
        } else {
            assert_eq!(reachable, canonical, "only root runs pods as other users");
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            reachable_binary(&binary, &shared).expect("reachable"),
            canonical
        );
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn container_settings_override_the_pods() {
        let pod = json!({"spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]}}});
        let container =
            json!({"securityContext": {"runAsUser": 65532, "allowPrivilegeEscalation": false}});
        assert_eq!(
            RunAs::of(&pod, &container),
            RunAs {
                uid: 65532,
                gid: 3000,
                groups: vec![2000, 4000],
                no_new_privileges: true
            }
        );
        assert_eq!(
            RunAs::of(&json!({}), &json!({})),
            RunAs {
                uid: 0,
                gid: 0,
                groups: vec![],
                no_new_privileges: false
            }
        );
    }
}
