//! The `cz-proxy` binary as the container runs it: documented flags, clear start-up errors.
//! (Also makes `cargo test --workspace` build the binary the loopback cluster runs.)

use std::process::Command;

fn cz_proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cz-proxy"))
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = cz_proxy().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--http-port",
        "--upstream",
        "--passthrough",
        "--tunnel-port",
        "--admin-port",
        "--tls-dir",
        "--header",
        "--reconnect-grace",
        "--drain-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("[env: CZ_TLS_DIR="), "{help}");
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
}
