//! `--dry-run -o yaml|json` prints what a platform team reviews and `kubectl apply
//! --dry-run=client -f -` takes, and changes nothing; the config file, `CZ_*` variables and flags
//! set the proxy image in that order of precedence, and an unknown key in the file is refused.

use std::path::Path;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::{self, Setup, NAMESPACE};

/// The variables that could set what these tests check, unset for every czctl they run.
const SETTINGS: [&str; 7] = [
    "CZ_CONFIG",
    "CZ_PROXY_IMAGE",
    "CZ_IMAGE_PULL_SECRET",
    "CZ_TUNNEL",
    "CZ_TIMEOUT",
    "CZ_HEADER",
    "CZ_TUNNEL_ENDPOINT",
];

/// `czctl service intercept echo -n demo -r 80 --dry-run EXTRA` with `XDG_CONFIG_HOME` at
/// `config_home` and `env` set: (success, stdout, stderr).
async fn dry_run(
    setup: &Setup,
    config_home: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = support::sample_args(&["-r", "80", "--dry-run"]);
    args.extend_from_slice(extra);
    let mut command = setup.czctl(&args);
    for variable in SETTINGS {
        command.env_remove(variable);
    }
    command
        .env("XDG_CONFIG_HOME", config_home)
        .envs(env.iter().copied());
    support::run(command).await
}

/// The objects of `-o json` output, which must be one `v1` `List`.
fn items(json: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(json).expect("-o json prints JSON");
    assert_eq!(
        (&list["apiVersion"], &list["kind"]),
        (&"v1".into(), &"List".into())
    );
    list["items"].as_array().expect("items").clone()
}

/// The proxy image and pull secrets of the Deployment in `-o json` output.
fn image_and_pull_secrets(json: &str) -> (String, Value) {
    let deployment = items(json)
        .into_iter()
        .find(|item| item["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    (
        pod["containers"][0]["image"]
            .as_str()
            .expect("an image")
            .to_owned(),
        pod["imagePullSecrets"].clone(),
    )
}

/// `kubectl --kubeconfig K apply --dry-run=client -f - ARGS` with `input` on its standard input:
/// what it printed, or its error output.
async fn kubectl_apply(setup: &Setup, input: &str, args: &[&str]) -> Result<String, String> {
    let mut kubectl = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&setup.kubeconfig)
        .args(["apply", "--dry-run=client", "-f", "-"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut stdin = kubectl.stdin.take().expect("kubectl's stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write to kubectl");
    drop(stdin);
    let output = tokio::time::timeout(support::CZCTL_DEADLINE, kubectl.wait_with_output())
        .await
        .expect("kubectl finishes")
        .expect("kubectl's output");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_output_is_what_kubectl_applies_and_changes_nothing() {
    let setup = Setup::start().await;
    let before = setup.service_state().await;
    let no_config = setup.dir().join("no-config");

    let (ok, yaml, stderr) = dry_run(&setup, &no_config, &[], &[]).await;
    assert!(ok, "{stderr}");
    for expected in [
        "kind: Secret",
        "kind: Service",
        "kind: Deployment",
        "readOnlyRootFilesystem: true",
        "automountServiceAccountToken: false",
        "czctl.io/intercept:",
        "Elided:",
    ] {
        assert!(yaml.contains(expected), "{expected} missing from:\n{yaml}");
    }
    assert!(
        !yaml.contains("PRIVATE KEY") && !yaml.contains("BEGIN CERTIFICATE"),
        "no key material in dry-run output:\n{yaml}"
    );
    let applied = kubectl_apply(&setup, &yaml, &[])
        .await
        .unwrap_or_else(|error| panic!("kubectl refused -o yaml: {error}\n{yaml}"));
    let lines: Vec<&str> = applied.lines().collect();
    assert_eq!(lines.len(), 4, "{applied}");
    assert!(
        lines[0].starts_with("service/cz-shadow-echo-")
            && lines[1].starts_with("secret/cz-tls-echo-")
            && lines[2].starts_with("deployment.apps/cz-proxy-echo-")
            && lines[3] == "service/echo configured (dry run)",
        "{applied}"
    );

    let (ok, json, stderr) = dry_run(&setup, &no_config, &[], &["-o", "json"]).await;
    assert!(ok, "{stderr}");
    let items = items(&json);
    let kinds: Vec<&str> = items
        .iter()
        .map(|item| item["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(kinds, ["Service", "Secret", "Deployment", "Service"]);
    let data = items[1]["data"]
        .as_object()
        .expect("the Secret's data keys");
    assert!(
        data.len() == 3 && data.values().all(|value| value == ""),
        "{data:?}"
    );
    // It is owned by the shadow Service (created just before it), so it goes with it.
    let owner = &items[1]["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["uid"]),
        (
            &items[0]["kind"],
            &items[0]["metadata"]["name"],
            &Value::from(czctl::SHADOW_UID_PLACEHOLDER)
        )
    );
    // The change to the Service: its selector becomes the proxy pods' labels, and nothing but
    // the selector and czctl's annotation is set.
    let switched = &items[3];
    assert_eq!(switched["metadata"]["name"], "echo");
    assert_eq!(
        switched["spec"]["selector"],
        items[2]["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        switched["spec"].as_object().map(|spec| spec.len()),
        Some(1),
        "{switched}"
    );
    assert!(switched["metadata"]["annotations"]["czctl.io/intercept"]
        .as_str()
        .is_some_and(|record| record.contains("originalSelector")));
    // A real API server's OpenAPI v2 lets kubectl validate a List item by item; the loopback
    // cluster serves OpenAPI v3 only, so the List is applied without client-side validation and
    // each item again with it.
    let applied = kubectl_apply(&setup, &json, &["--validate=false"])
        .await
        .unwrap_or_else(|error| panic!("kubectl refused -o json: {error}\n{json}"));
    assert_eq!(applied.lines().count(), 4, "{applied}");
    for item in &items {
        let item = item.to_string();
        kubectl_apply(&setup, &item, &[])
            .await
            .unwrap_or_else(|error| panic!("kubectl refused {item}: {error}"));
    }

    // -o is --dry-run's only.
    let (ok, _, stderr) = support::run(setup.czctl(&[
        "service",
        "intercept",
        "echo",
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ]))
    .await;
    assert!(!ok && stderr.contains("--dry-run"), "{stderr}");

    assert_eq!(setup.leftovers().await, Vec::<String>::new());
    assert_eq!(setup.service_state().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flag_then_env_then_config_file_then_default() {
    // --help names every variable and every key of the file.
    let (ok, help, _) = support::run(support::czctl(&["service", "intercept", "--help"])).await;
    assert!(ok);
    for name in SETTINGS.iter().chain(&[
        "proxy-image",
        "image-pull-secret",
        "tunnel",
        "timeout",
        "header",
        "config.toml",
    ]) {
        assert!(help.contains(name), "--help does not name {name}:\n{help}");
    }

    let setup = Setup::start().await;
    let home = setup.dir().join("config-home");
    let default_image = concat!("ghcr.io/czctl/cz-proxy:", env!("CARGO_PKG_VERSION"));
    let (ok, json, stderr) = dry_run(&setup, &home, &[], &["-o", "json"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        image_and_pull_secrets(&json),
        (default_image.to_owned(), Value::Null)
    );

    // The team's file at $XDG_CONFIG_HOME/czctl/config.toml.
    std::fs::create_dir_all(home.join("czctl")).expect("the config directory");
    std::fs::write(
        home.join("czctl/config.toml"),
        "proxy-image = \"registry.internal/file/cz-proxy:1\"\nimage-pull-secret = \"team-pull\"\nheader = \"X-Team:file\"\n",
    )
    .expect("write the config file");
    let (ok, json, stderr) = dry_run(&setup, &home, &[], &["-o", "json"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        image_and_pull_secrets(&json),
        (
            "registry.internal/file/cz-proxy:1".to_owned(),
            serde_json::json!([{"name": "team-pull"}])
        )
    );
    assert!(json.contains("--header=x-team:file"), "{json}");

    let env = [("CZ_PROXY_IMAGE", "registry.internal/env/cz-proxy:2")];
    let (ok, json, stderr) = dry_run(&setup, &home, &env, &["-o", "json"]).await;
    assert!(ok, "{stderr}");
    let (image, pull_secrets) = image_and_pull_secrets(&json);
    assert_eq!(image, "registry.internal/env/cz-proxy:2");
    assert_eq!(pull_secrets, serde_json::json!([{"name": "team-pull"}]));

    let (ok, json, stderr) = dry_run(
        &setup,
        &home,
        &env,
        &[
            "-o",
            "json",
            "--proxy-image",
            "registry.internal/flag/cz-proxy:3",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        image_and_pull_secrets(&json).0,
        "registry.internal/flag/cz-proxy:3"
    );

    // --config (or CZ_CONFIG) names another file instead; a typo in it is refused before
    // anything is done, with the key, the file and the key meant.
    let other = setup.dir().join("other.toml");
    std::fs::write(&other, "proxy-imgae = \"registry.internal/typo:1\"\n").expect("write");
    let other_path = other.to_str().expect("a UTF-8 path");
    for (env, extra) in [
        (vec![], vec!["--config", other_path]),
        (vec![("CZ_CONFIG", other_path)], vec![]),
    ] {
        let (ok, stdout, stderr) = dry_run(&setup, &home, &env, &extra).await;
        assert!(
            !ok && stdout.is_empty()
                && stderr.contains("unknown key `proxy-imgae`")
                && stderr.contains(other_path)
                && stderr.contains("did you mean `proxy-image`?"),
            "{stderr}"
        );
    }
    // --clean uses none of the settings, so the broken file does not stop a clean-up.
    let mut clean = setup.czctl(&support::sample_args(&["--clean", "--config", other_path]));
    clean.env_remove("CZ_CONFIG");
    let (ok, _, stderr) = support::run(clean).await;
    assert!(ok, "{stderr}");
    std::fs::write(&other, "tunnel = \"port-forward\"\n").expect("write");
    let (ok, json, stderr) =
        dry_run(&setup, &home, &[], &["-o", "json", "--config", other_path]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        image_and_pull_secrets(&json),
        (default_image.to_owned(), Value::Null)
    );
    assert_eq!(setup.leftovers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_on_an_intercepted_service_shows_the_join_and_changes_nothing() {
    let setup = Setup::start().await;
    let laptop = crate::support::http::LaptopApp::start(0).await;
    let alice = setup.intercept(laptop.port, &["-x", "x-dev:alice"]).await;
    let before = setup.service_state().await;
    let no_config = setup.dir().join("no-config");

    let (ok, yaml, stderr) = dry_run(&setup, &no_config, &[], &["-x", "x-dev:bob"]).await;
    assert!(ok, "{stderr}");
    assert!(
        yaml.contains("intercepted on this port already")
            && yaml.contains("x-dev:alice")
            && yaml.contains("nothing is created"),
        "{yaml}"
    );
    let applied = kubectl_apply(&setup, &yaml, &[])
        .await
        .unwrap_or_else(|error| panic!("kubectl refused -o yaml: {error}\n{yaml}"));
    assert_eq!(applied.trim(), "service/echo configured (dry run)");

    let (ok, json, stderr) =
        dry_run(&setup, &no_config, &[], &["-x", "x-dev:bob", "-o", "json"]).await;
    assert!(ok, "{stderr}");
    let items = items(&json);
    assert_eq!(items.len(), 1, "only the Service changes: {json}");
    let recorded = &items[0];
    assert_eq!(
        recorded["spec"],
        before["spec"]["selector"]
            .as_object()
            .map(|selector| serde_json::json!({"selector": selector}))
            .expect("a selector"),
        "the selector stays"
    );
    let record: Value = serde_json::from_str(
        recorded["metadata"]["annotations"]["czctl.io/intercept"]
            .as_str()
            .expect("the record"),
    )
    .expect("JSON");
    let headers: Vec<&str> = record["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| member["header"].as_str().expect("a header"))
        .collect();
    assert_eq!(headers, ["x-dev:alice", "x-dev:bob"]);

    // A header another session holds is refused, as joining refuses it.
    let (ok, _, stderr) = dry_run(&setup, &no_config, &[], &["-x", "x-dev:alice"]).await;
    assert!(!ok && stderr.contains("x-dev:alice"), "{stderr}");

    assert_eq!(
        setup.service_state().await,
        before,
        "the dry runs changed nothing"
    );
    alice.signal("INT");
    let (ok, _, stderr) = alice.finish().await;
    assert!(ok, "{stderr}");
    setup.no_leftovers("after alice left").await;
}
