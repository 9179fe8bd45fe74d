use super::*;

/// Held by tests that set `CZ_*` variables or check defaults: the environment is the process's.
static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn parses_flags_and_defaults() {
    let _environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::try_parse_from([
        "cz-proxy",
        "--http-port=8080",
        "--upstream=shadow.demo:80",
        "--passthrough=9090=shadow.demo:9090",
        "--passthrough=9091=10.0.0.1:91",
        "--header=X-MY-HEADER:ME",
    ])
    .expect("valid flags");
    assert_eq!(config.passthrough.len(), 2);
    assert_eq!(config.passthrough[1].target, "10.0.0.1:91");
    assert_eq!(config.header.to_string(), "x-my-header:ME");
    assert_eq!(config.reconnect_grace, Duration::from_secs(5));
    assert_eq!(config.shutdown_delay, contract::DEFAULT_SHUTDOWN_DELAY);
    assert_eq!(config.tunnel_port, 7443);
    assert_eq!(config.carrier_port, 7444);
    assert_eq!(config.control_port, 7445);
    assert_eq!(config.orphan_after, contract::DEFAULT_ORPHAN_AFTER);
    assert_eq!(config.tunnel_slot_timeout, Duration::from_secs(5));
    assert_eq!(config.tunnel_response_timeout, Duration::from_secs(60));
    assert_eq!(config.tunnel_max_requests, 256);
    assert!(
        config.tunnel_max_requests < cz_shared::tls::MAX_CONCURRENT_REQUESTS,
        "a flood meets the proxy's limit before the laptop's stream limit"
    );
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let error = Config::try_parse_from([
        "cz-proxy",
        "--http-port=1",
        "--upstream=u:1",
        "--passthrough=9090",
    ])
    .expect_err("bad passthrough");
    assert!(
        error.to_string().contains("LISTEN_PORT=HOST:PORT"),
        "{error}"
    );
    let error = Config::try_parse_from([
        "cz-proxy",
        "--http-port=1",
        "--upstream=u:1",
        "--header=nocolon",
    ])
    .expect_err("bad rule");
    assert!(error.to_string().contains("NAME:VALUE"), "{error}");
    let error = Config::try_parse_from([
        "cz-proxy",
        "--http-port=1",
        "--upstream=u:1",
        "--tunnel-max-requests=0",
    ])
    .expect_err("no request could ever pass");
    assert!(
        error.to_string().contains("--tunnel-max-requests"),
        "{error}"
    );
}

/// Every flag, the variable that also sets it, and a value other than its default.
const EVERY_FLAG: [(&str, &str, &str); 27] = [
    ("bind-ip", "CZ_BIND_IP", "127.0.0.9"),
    ("http-port", "CZ_HTTP_PORT", "8081"),
    ("upstream", "CZ_UPSTREAM", "shadow.env:81"),
    ("passthrough", "CZ_PASSTHROUGH", "9090=a:90,9091=b:91"),
    ("tunnel-port", "CZ_TUNNEL_PORT", "7444"),
    ("carrier-port", "CZ_CARRIER_PORT", "7445"),
    ("admin-port", "CZ_ADMIN_PORT", "9902"),
    ("tls-dir", "CZ_TLS_DIR", "/env/tls"),
    ("header", "CZ_HEADER", "x-env:on"),
    ("session", "CZ_SESSION", "0123abcd"),
    ("orphan-after", "CZ_ORPHAN_AFTER", "3m"),
    ("control-port", "CZ_CONTROL_PORT", "7446"),
    ("reconnect-grace", "CZ_RECONNECT_GRACE", "7s"),
    ("shutdown-delay", "CZ_SHUTDOWN_DELAY", "3s"),
    ("drain-timeout", "CZ_DRAIN_TIMEOUT", "8s"),
    ("header-read-timeout", "CZ_HEADER_READ_TIMEOUT", "9s"),
    ("max-header-bytes", "CZ_MAX_HEADER_BYTES", "10000"),
    (
        "upstream-connect-timeout",
        "CZ_UPSTREAM_CONNECT_TIMEOUT",
        "11s",
    ),
    ("worker-threads", "CZ_WORKER_THREADS", "3"),
    (
        "trusted-proxies",
        "CZ_TRUSTED_PROXIES",
        "10.0.0.0/8,fd00::/8",
    ),
    ("max-connections", "CZ_MAX_CONNECTIONS", "12"),
    (
        "max-passthrough-connections",
        "CZ_MAX_PASSTHROUGH_CONNECTIONS",
        "13",
    ),
    (
        "passthrough-idle-timeout",
        "CZ_PASSTHROUGH_IDLE_TIMEOUT",
        "14s",
    ),
    ("socket-buffer-bytes", "CZ_SOCKET_BUFFER_BYTES", "15000"),
    ("tunnel-slot-timeout", "CZ_TUNNEL_SLOT_TIMEOUT", "12s"),
    (
        "tunnel-response-timeout",
        "CZ_TUNNEL_RESPONSE_TIMEOUT",
        "13m",
    ),
    ("tunnel-max-requests", "CZ_TUNNEL_MAX_REQUESTS", "14"),
];

/// Asserts that `config` holds the values of [`EVERY_FLAG`].
fn assert_every_value(config: &Config, source: &str) {
    let passthrough = [("9090", "a:90"), ("9091", "b:91")].map(|(port, target)| Passthrough {
        listen_port: port.parse().expect("port"),
        target: target.to_owned(),
    });
    assert_eq!(config.bind_ip.to_string(), "127.0.0.9", "{source}");
    assert_eq!(config.http_port, 8081, "{source}");
    assert_eq!(config.upstream, "shadow.env:81", "{source}");
    assert_eq!(config.passthrough, passthrough, "{source}");
    assert_eq!(config.tunnel_port, 7444, "{source}");
    assert_eq!(config.carrier_port, 7445, "{source}");
    assert_eq!(config.admin_port, 9902, "{source}");
    assert_eq!(config.tls_dir, PathBuf::from("/env/tls"), "{source}");
    assert_eq!(config.header.to_string(), "x-env:on", "{source}");
    assert_eq!(config.session, "0123abcd", "{source}");
    assert_eq!(config.orphan_after, Duration::from_secs(180), "{source}");
    assert_eq!(config.control_port, 7446, "{source}");
    assert_eq!(config.reconnect_grace, Duration::from_secs(7), "{source}");
    assert_eq!(config.shutdown_delay, Duration::from_secs(3), "{source}");
    assert_eq!(config.drain_timeout, Duration::from_secs(8), "{source}");
    assert_eq!(
        config.header_read_timeout,
        Duration::from_secs(9),
        "{source}"
    );
    assert_eq!(config.max_header_bytes, 10000, "{source}");
    let connect_timeout = config.upstream_connect_timeout;
    assert_eq!(connect_timeout, Duration::from_secs(11), "{source}");
    assert_eq!(config.worker_threads, Some(3), "{source}");
    let trusted: Vec<_> = config
        .trusted_proxies
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(trusted, ["10.0.0.0/8", "fd00::/8"], "{source}");
    assert_eq!(config.max_connections, 12, "{source}");
    assert_eq!(config.max_passthrough_connections, 13, "{source}");
    let idle = config.passthrough_idle_timeout;
    assert_eq!(idle, Duration::from_secs(14), "{source}");
    assert_eq!(config.socket_buffer_bytes, 15000, "{source}");
    let slot_timeout = config.tunnel_slot_timeout;
    assert_eq!(slot_timeout, Duration::from_secs(12), "{source}");
    let response_timeout = config.tunnel_response_timeout;
    assert_eq!(response_timeout, Duration::from_secs(13 * 60), "{source}");
    assert_eq!(config.tunnel_max_requests, 14, "{source}");
}

#[test]
fn parses_the_args_czctl_gives_its_deployment() {
    let sent = contract::ProxyArgs {
        http_port: 8080,
        upstream: "10.96.0.7:80".into(),
        passthrough: vec![
            Passthrough {
                listen_port: 9090,
                target: "10.96.0.7:9090".into(),
            },
            Passthrough {
                listen_port: 9091,
                target: "10.96.0.7:91".into(),
            },
        ],
        tunnel_port: 7444,
        carrier_port: 7445,
        admin_port: 9902,
        header: "x-my-header:me".into(),
        session: "0123abcd".into(),
        orphan_after: Duration::from_secs(90),
        control_port: 7446,
        shutdown_delay: Duration::from_secs(7),
        reconnect_grace: Duration::from_secs(12),
    };
    let config =
        Config::try_parse_from(std::iter::once("cz-proxy".to_owned()).chain(sent.to_args()))
            .expect("cz-proxy accepts what czctl writes");
    let received = contract::ProxyArgs {
        http_port: config.http_port,
        upstream: config.upstream,
        passthrough: config.passthrough,
        tunnel_port: config.tunnel_port,
        carrier_port: config.carrier_port,
        admin_port: config.admin_port,
        header: config.header.to_string(),
        session: config.session,
        orphan_after: config.orphan_after,
        control_port: config.control_port,
        shutdown_delay: config.shutdown_delay,
        reconnect_grace: config.reconnect_grace,
    };
    assert_eq!(received, sent);
    assert_eq!(config.tls_dir, PathBuf::from(contract::TLS_DIR));
}

#[test]
fn every_flag_is_documented_with_its_variable() {
    use clap::CommandFactory;
    let command = Config::command();
    let documented: Vec<_> = command
        .get_arguments()
        .filter_map(|arg| Some((arg.get_long()?, arg.get_env()?.to_str()?)))
        .collect();
    let expected: Vec<_> = EVERY_FLAG.iter().map(|(f, v, _)| (*f, *v)).collect();
    assert_eq!(documented, expected);
    let help = Config::command().render_long_help().to_string();
    for (flag, variable, _) in EVERY_FLAG {
        assert!(help.contains(&format!("--{flag}")), "--{flag} missing");
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing"
        );
    }
}

#[test]
fn every_flag_takes_effect() {
    let mut args = vec!["cz-proxy".to_owned()];
    for (flag, _, value) in EVERY_FLAG {
        let repeated = ["passthrough", "trusted-proxies"].contains(&flag);
        for value in value.split(',').filter(|_| repeated) {
            args.push(format!("--{flag}={value}"));
        }
        if !repeated {
            args.push(format!("--{flag}={value}"));
        }
    }
    let config = Config::try_parse_from(args).expect("valid flags");
    assert_every_value(&config, "flags");
}

#[test]
fn every_variable_takes_effect() {
    let _environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    for (_, variable, value) in EVERY_FLAG {
        std::env::set_var(variable, value);
    }
    let config = Config::try_parse_from(["cz-proxy"]);
    for (_, variable, _) in EVERY_FLAG {
        std::env::remove_var(variable);
    }
    assert_every_value(&config.expect("valid variables"), "variables");
}
