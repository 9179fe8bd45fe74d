//! Secret and ConfigMap volumes, written as a kubelet writes them: one file per key (or per
//! `items[]` entry, at its `path`), owned by the kubelet's user (root on a node and in CI) with
//! the item's `mode`, else the volume's `defaultMode`, else 0644. When the pod sets `fsGroup`,
//! files are group-owned by it and group-readable (a kubelet adds 0440 to read-only volumes),
//! so a process running as another user reads them exactly when it could on a real node.

use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::resources::{CONFIGMAPS, SECRETS};
use crate::run_as::fs_group;
use crate::store::Store;

/// `defaultMode` when a volume sets none.
const DEFAULT_MODE: u32 = 0o644;
/// What `fsGroup` adds to the files of a read-only volume.
const FS_GROUP_READ: u32 = 0o440;
/// Directories every pod user can traverse.
const DIRECTORY_MODE: u32 = 0o755;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

fn not_found(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, message)
}

/// Creates `dir` (and its parents) traversable by every user.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIRECTORY_MODE))?;
    }
    Ok(())
}

/// Writes the Secret and ConfigMap volumes `container` mounts under `pod_dir`; returns mount
/// path → directory.
pub fn materialize(
    store: &Store,
    pod: &Value,
    container: &Value,
    pod_dir: &Path,
) -> std::io::Result<Vec<(String, PathBuf)>> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut mounts = Vec::new();
    create_dir(pod_dir)?;
    create_dir(&pod_dir.join("volumes"))?;
    for mount in container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let volume_name = mount["name"].as_str().unwrap_or_default();
        let Some(volume) = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .and_then(|v| v.iter().find(|v| v["name"] == volume_name))
        else {
            continue;
        };
        let dir = pod_dir.join("volumes").join(volume_name);
        create_dir(&dir)?;
        let (source, entries) = if let Some(source) = volume.get("secret") {
            let name = source["secretName"].as_str().unwrap_or_default();
            let secret = store
                .get(&SECRETS, namespace, name)
                .map_err(|e| not_found(e.to_string()))?;
            (source, decoded(&secret, "data")?)
        } else if let Some(source) = volume.get("configMap") {
            let name = source["name"].as_str().unwrap_or_default();
            let config_map = store
                .get(&CONFIGMAPS, namespace, name)
                .map_err(|e| not_found(e.to_string()))?;
            let mut entries = text_entries(&config_map);
            entries.extend(decoded(&config_map, "binaryData")?);
            (source, entries)
        } else {
            continue;
        };
        write_volume(pod, source, entries, &dir)?;
        mounts.push((
            mount["mountPath"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            dir,
        ));
    }
    Ok(mounts)
}

fn decoded(object: &Value, field: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    object
        .get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .map(|bytes| (key.clone(), bytes))
                .map_err(|e| invalid(format!("{field}.{key} is not base64: {e}")))
        })
        .collect()
}

fn text_entries(config_map: &Value) -> Vec<(String, Vec<u8>)> {
    config_map
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            (
                key.clone(),
                value.as_str().unwrap_or_default().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// Writes `entries` of a volume `source` into `dir`, as its `items` (or every key) say.
fn write_volume(
    pod: &Value,
    source: &Value,
    entries: Vec<(String, Vec<u8>)>,
    dir: &Path,
) -> std::io::Result<()> {
    let mode_of = |value: Option<&Value>| {
        value
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
    };
    let default_mode = mode_of(source.get("defaultMode")).unwrap_or(DEFAULT_MODE);
    let items = source.get("items").and_then(Value::as_array);
    let files: Vec<(String, Vec<u8>, u32)> = match items {
        None => entries
            .into_iter()
            .map(|(key, bytes)| (key, bytes, default_mode))
            .collect(),
        Some(items) => items
            .iter()
            .map(|item| {
                let key = item["key"].as_str().unwrap_or_default();
                let bytes = entries
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, bytes)| bytes.clone())
                    .ok_or_else(|| {
                        not_found(format!(
                            "key {key:?} named in items is not in the volume's source"
                        ))
                    })?;
                let path = item["path"].as_str().unwrap_or(key).to_owned();
                Ok((
                    path,
                    bytes,
                    mode_of(item.get("mode")).unwrap_or(default_mode),
                ))
            })
            .collect::<std::io::Result<_>>()?,
    };
    let group = fs_group(pod);
    for (path, bytes, mode) in files {
        if Path::new(&path)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(invalid(format!(
                "volume path {path:?} must be relative and may not contain '..'"
            )));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            create_dir(parent)?;
        }
        write_file(&file, &bytes, mode, group)?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, group: Option<u32>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match group {
            Some(group) => {
                std::os::unix::fs::chown(path, None, Some(group))?;
                mode | FS_GROUP_READ
            }
            None => mode,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    #[cfg(not(unix))]
    let _ = (mode, group);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cz-testkit-volumes-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_dir(&dir).expect("scratch directory");
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("file").permissions().mode() & 0o777
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let dir = scratch("items");
        let source = json!({"defaultMode": 0o400, "items": [{"key": "a", "path": "sub/one"}, {"key": "b", "path": "two", "mode": 0o600}]});
        let entries = vec![
            ("a".into(), b"A".to_vec()),
            ("b".into(), b"B".to_vec()),
            ("c".into(), b"C".to_vec()),
        ];
        write_volume(&json!({}), &source, entries, &dir).expect("written");
        assert_eq!(std::fs::read(dir.join("sub/one")).expect("one"), b"A");
        assert_eq!(mode(&dir.join("sub/one")), 0o400);
        assert_eq!(mode(&dir.join("two")), 0o600);
        assert!(!dir.join("c").exists(), "keys not in items are left out");
        let escape = json!({"items": [{"key": "a", "path": "../x"}]});
        let error = write_volume(&json!({}), &escape, vec![("a".into(), vec![])], &dir)
            .expect_err("a path out of the volume is refused");
        assert!(error.to_string().contains("'..'"), "{error}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn fs_group_owns_the_files_and_may_read_them() {
        let dir = scratch("fsgroup");
        // Root may give the files to any group; another user only to its own.
        let group = if crate::run_as::is_root() {
            65532
        } else {
            std::fs::metadata(&dir).expect("scratch").gid()
        };
        let pod = json!({"spec": {"securityContext": {"fsGroup": group}}});
        write_volume(
            &pod,
            &json!({"defaultMode": 0o400}),
            vec![("k".into(), b"v".to_vec())],
            &dir,
        )
        .expect("written");
        let file = dir.join("k");
        assert_eq!(mode(&file), 0o440);
        assert_eq!(std::fs::metadata(&file).expect("file").gid(), group);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
