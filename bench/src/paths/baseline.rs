//! The baselines the suite measures against: NGINX configured as the issue's reference, and
//! rathole's server and client carrying the intercepted path.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Placement;
use crate::procs::{free_tcp_port, wait_for_port, CommandLog, Process};
use crate::tools::Tools;

/// NGINX configured as the issue's reference: a `map` on the intercept header choosing between
/// two keep-alive upstream pools, forwarding headers like cz-proxy's, bodies streamed both ways
/// (cz-proxy does not buffer either).
pub(super) fn nginx_conf(
    dir: &Path,
    workers: u8,
    h1_port: u16,
    h2_port: u16,
    cluster_port: u16,
    laptop_port: u16,
) -> anyhow::Result<PathBuf> {
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    underscores_in_headers on;
    keepalive_requests 1000000;
    map $http_x_c6o_intercept $backend {{
        default cluster;
        "~*^\s*yes\s*$" laptop;
    }}
    upstream cluster {{ server 127.0.0.1:{cluster_port}; keepalive 64; keepalive_requests 1000000; }}
    upstream laptop {{ server 127.0.0.1:{laptop_port}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{h1_port};
        listen 127.0.0.1:{h2_port} http2;
        client_max_body_size 0;
        location / {{
            proxy_pass http://$backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// rathole with its Noise transport (encrypted, as the QUIC tunnel is): the server on the
/// cluster side, the client beside the app. Returns both and the port NGINX forwards to.
pub(super) fn start_rathole(
    tools: &Tools,
    placement: Placement,
    app_port: u16,
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<(Process, Process, u16)> {
    let keys = std::process::Command::new(&tools.rathole)
        .arg("--genkey")
        .output()
        .context("rathole --genkey")?;
    let keys = String::from_utf8_lossy(&keys.stdout);
    let key_after = |label: &str| {
        let mut lines = keys.lines().skip_while(|l| !l.contains(label)).skip(1);
        lines
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    };
    let private = key_after("Private Key").context("no private key from rathole --genkey")?;
    let public = key_after("Public Key").context("no public key from rathole --genkey")?;
    let (control, visitor) = (free_tcp_port()?, free_tcp_port()?);
    let server_conf = dir.join("rathole-server.toml");
    std::fs::write(
        &server_conf,
        format!(
            r#"[server]
bind_addr = "127.0.0.1:{control}"
[server.transport]
type = "noise"
[server.transport.noise]
local_private_key = "{private}"
[server.services.app]
token = "bench"
bind_addr = "127.0.0.1:{visitor}"
nodelay = true
"#
        ),
    )?;
    let client_conf = dir.join("rathole-client.toml");
    std::fs::write(
        &client_conf,
        format!(
            r#"[client]
remote_addr = "127.0.0.1:{control}"
[client.transport]
type = "noise"
[client.transport.noise]
remote_public_key = "{public}"
[client.services.app]
token = "bench"
local_addr = "127.0.0.1:{app_port}"
nodelay = true
"#
        ),
    )?;
    let args = ["--server".into(), server_conf.display().to_string()];
    let mut command = log.command(placement.cluster, &tools.rathole, &args);
    command.env("RUST_LOG", "warn");
    let mut server = Process::spawn("rathole server", command)?;
    wait_for_port(&mut server, control)?;
    let args = ["--client".into(), client_conf.display().to_string()];
    let mut command = log.command(placement.rest, &tools.rathole, &args);
    command.env("RUST_LOG", "warn");
    let client = Process::spawn("rathole client", command)?;
    Ok((server, client, visitor))
}
