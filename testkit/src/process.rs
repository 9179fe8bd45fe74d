//! Container processes: a `cz-proxy` container started as its pod's user, inside its pod's
//! network, with its args, env and mounted volumes as the pod spec gives them and its output in
//! the pod's log; stopped with SIGTERM, then SIGKILL after the grace period.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::logs::PodDirs;
use crate::network::PodNetwork;
use crate::run_as::RunAs;
use crate::store::Store;

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Starts `container` of `pod` running `binary`: mounted volumes rewritten to the pod's
/// directory, `fieldRef` env resolved, stdout and stderr to the container's log.
pub fn spawn(
    store: &Store,
    dirs: &PodDirs,
    pod: &Value,
    container: &Value,
    binary: &Path,
    network: &PodNetwork,
) -> std::io::Result<tokio::process::Child> {
    let uid = text(pod, "/metadata/uid");
    let mounts = crate::volumes::materialize(store, pod, container, &dirs.pod(uid))?;
    // Paths under a mount, wherever they appear in an argument or value (`--tls-dir=/etc/x`).
    let rewrite = |value: &str| {
        mounts
            .iter()
            .fold(value.to_owned(), |value, (mount, local)| {
                value.replace(mount.as_str(), &local.display().to_string())
            })
    };
    let run_as = RunAs::of(pod, container);
    let mut line = run_as.command_line(binary);
    let strings = |field: &str| -> Vec<String> {
        container
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let args = strings("command")
        .into_iter()
        .skip(1)
        .chain(strings("args"));
    line.extend(args.map(|arg| OsString::from(rewrite(&arg))));
    let line = network.command_line(line);
    let mut command = tokio::process::Command::new(&line[0]);
    command.args(&line[1..]);
    command.env_clear();
    if let Ok(filter) = std::env::var("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    let ip = network.ip().to_string();
    for env in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let value = match env
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            Some("status.podIP") => ip.clone(),
            Some("metadata.name") => text(pod, "/metadata/name").to_owned(),
            Some("metadata.namespace") => text(pod, "/metadata/namespace").to_owned(),
            _ => rewrite(text(env, "/value")),
        };
        command.env(text(env, "/name"), value);
    }
    if let Some(bind_ip) = network.bind_ip() {
        // On the shared loopback, the pod's own address stands in for its network namespace.
        command.env("CZ_BIND_IP", bind_ip.to_string());
    }
    let log = std::fs::File::create(dirs.log(uid, text(container, "/name")))?;
    command
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command.spawn().map_err(|error| run_as.spawn_error(error))
}

/// SIGTERM, then SIGKILL once `grace` has passed.
pub async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
