//! The `cz-proxy` binary as the container runs it: documented flags, clear start-up errors.
//! (Also makes `cargo test --workspace` build the binary the loopback cluster runs.)

use std::process::Command;

/// Every flag of `cz-proxy` and the environment variable that also sets it.
const EVERY_FLAG: [(&str, &str); 27] = [
    ("--bind-ip", "CZ_BIND_IP"),
    ("--http-port", "CZ_HTTP_PORT"),
    ("--upstream", "CZ_UPSTREAM"),
    ("--passthrough", "CZ_PASSTHROUGH"),
    ("--tunnel-port", "CZ_TUNNEL_PORT"),
    ("--carrier-port", "CZ_CARRIER_PORT"),
    ("--admin-port", "CZ_ADMIN_PORT"),
    ("--tls-dir", "CZ_TLS_DIR"),
    ("--header", "CZ_HEADER"),
    ("--session", "CZ_SESSION"),
    ("--orphan-after", "CZ_ORPHAN_AFTER"),
    ("--control-port", "CZ_CONTROL_PORT"),
    ("--reconnect-grace", "CZ_RECONNECT_GRACE"),
    ("--shutdown-delay", "CZ_SHUTDOWN_DELAY"),
    ("--drain-timeout", "CZ_DRAIN_TIMEOUT"),
    ("--header-read-timeout", "CZ_HEADER_READ_TIMEOUT"),
    ("--max-header-bytes", "CZ_MAX_HEADER_BYTES"),
    ("--upstream-connect-timeout", "CZ_UPSTREAM_CONNECT_TIMEOUT"),
    ("--worker-threads", "CZ_WORKER_THREADS"),
    ("--trusted-proxies", "CZ_TRUSTED_PROXIES"),
    ("--max-connections", "CZ_MAX_CONNECTIONS"),
    (
        "--max-passthrough-connections",
        "CZ_MAX_PASSTHROUGH_CONNECTIONS",
    ),
    ("--passthrough-idle-timeout", "CZ_PASSTHROUGH_IDLE_TIMEOUT"),
    ("--socket-buffer-bytes", "CZ_SOCKET_BUFFER_BYTES"),
    ("--tunnel-slot-timeout", "CZ_TUNNEL_SLOT_TIMEOUT"),
    ("--tunnel-response-timeout", "CZ_TUNNEL_RESPONSE_TIMEOUT"),
    ("--tunnel-max-requests", "CZ_TUNNEL_MAX_REQUESTS"),
];

/// The binary, with no `CZ_*` variable inherited from the test's environment.
fn cz_proxy() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cz-proxy"));
    for (_, variable) in EVERY_FLAG {
        command.env_remove(variable);
    }
    command
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = cz_proxy().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    // Each option's entry starts on a line of its own, "      --flag <VALUE>", and runs until the
    // next one; its description lines are indented further.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 && line.trim_start().starts_with('-') {
            entries.push(line.trim_start().replace("-h, ", "").replace("-V, ", ""));
        } else if let Some(entry) = entries.last_mut() {
            entry.push_str(line);
        }
    }
    for (flag, variable) in EVERY_FLAG {
        let entry = entries
            .iter()
            .find(|entry| entry.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        assert!(
            entry.contains(&format!("[env: {variable}")),
            "{flag} does not name {variable}:\n{entry}"
        );
    }
    let documented = entries.iter().filter(|e| e.contains("[env: CZ_")).count();
    assert_eq!(
        documented,
        EVERY_FLAG.len(),
        "an undocumented flag:\n{help}"
    );
}

#[test]
fn required_settings_come_from_the_environment_too() {
    // Nothing on the command line: the port, upstream and certificate directory all come from
    // variables, and the one error left is about the certificates the variable points at.
    let output = cz_proxy()
        .env("CZ_HTTP_PORT", "0")
        .env("CZ_UPSTREAM", "127.0.0.1:1")
        .env("CZ_TLS_DIR", "/nonexistent/from-env")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not read the session certificates from /nonexistent/from-env"),
        "{stderr}"
    );
}

#[test]
fn missing_certificates_are_a_clear_error() {
    let output = cz_proxy()
        .args([
            "--http-port=0",
            "--upstream=127.0.0.1:1",
            "--tls-dir=/nonexistent/tls",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not read the session certificates from /nonexistent/tls"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Secret"),
        "says where they come from: {stderr}"
    );
}
