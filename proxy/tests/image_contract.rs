//! The image's runtime contract, without a container engine: the static binary that
//! `deploy/build-proxy.sh` built runs in an empty, read-only root filesystem holding only itself
//! and the mounted session Secret (what the `scratch` image and the kubelet give it), as uid/gid
//! 65532 with no supplementary groups. It must start, route a request without the intercept
//! header to the upstream, answer one with the header (no laptop connected) with 503
//! `tunnel-disconnected`, and serve its probes.
//!
//! Needs root (mount namespace, chroot) and the binary, so it is ignored by `cargo test`; CI runs
//! `CZ_PROXY_BINARY=$(deploy/build-proxy.sh) cargo test -p cz-proxy --test image_contract -- --ignored`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cz_shared::contract::{HEALTH_PATH, READY_PATH, STATE_PATH, TLS_DIR};
use cz_shared::headers::ERROR_HEADER;
use cz_shared::tls::SessionCa;
use cz_shared::DEFAULT_RULE;

/// The image's `USER`.
const IMAGE_USER: u32 = 65532;
/// What the test upstream answers, so a response is known to come from it.
const UPSTREAM_BODY: &str = "answered by the in-cluster upstream";
/// The devices the OCI runtime spec puts in every container's /dev (bound in by [`ENTER_IMAGE`]).
const OCI_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Makes the root a mount of its own, gives it the devices every OCI runtime provides (without
/// them the static binary's random source fails: seen as a panic initialising rand's ThreadRng,
/// which falls back to /dev/urandom in a static build), mounts the Secret into it, makes both
/// read-only, then runs the binary
/// chrooted as the image's user. `$1` root, `$2` Secret directory, `$3` mount point inside the
/// root, then the binary's arguments. `exec` keeps one pid: the child's pid is the proxy's.
const ENTER_IMAGE: &str = r#"set -eu
root=$1 secret=$2 mount_point=$3; shift 3
mount --bind "$root" "$root"
for device in "$root"/dev/*; do
  mount --bind "/dev/${device##*/}" "$device"
done
mount --bind "$secret" "$root$mount_point"
mount -o remount,bind,ro "$root$mount_point"
mount -o remount,bind,ro "$root"
exec chroot --userspec=65532:65532 --groups= "$root" /cz-proxy "$@""#;

#[test]
#[ignore = "needs root and the static binary: CZ_PROXY_BINARY=$(deploy/build-proxy.sh) cargo test -p cz-proxy --test image_contract -- --ignored"]
fn the_static_binary_serves_from_an_empty_read_only_root_as_65532() {
    let binary = PathBuf::from(std::env::var_os("CZ_PROXY_BINARY").expect(
        "CZ_PROXY_BINARY names the binary to test: set it to the path deploy/build-proxy.sh prints",
    ));
    let euid = fs::metadata("/proc/self").expect("/proc is mounted").uid();
    assert_eq!(
        euid, 0,
        "this test mounts and chroots: run it as root (CI does)"
    );

    let scratch = Scratch::new();
    let root = scratch.path.join("root");
    let secret = scratch.path.join("secret");
    image_filesystem(&binary, &root);
    kubelet_secret(&secret);

    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream_address = upstream.local_addr().expect("upstream address");
    std::thread::spawn(move || serve_upstream(&upstream));

    // cz-proxy binds its own ports: take free ones from the kernel and hand them over.
    let (http, admin, tunnel) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    let stderr = fs::File::create(scratch.path.join("cz-proxy.log")).expect("log file");
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            ENTER_IMAGE,
            "sh",
        ])
        .args([&root, &secret, Path::new(TLS_DIR)])
        .args(["--bind-ip=127.0.0.1", "--reconnect-grace=1s"])
        .arg(format!("--http-port={http}"))
        .arg(format!("--admin-port={admin}"))
        .arg(format!("--tunnel-port={tunnel}"))
        .arg(format!("--upstream={upstream_address}"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("unshare (util-linux) runs");
    let mut proxy = RunningProxy {
        child,
        log: scratch.path.join("cz-proxy.log"),
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let http = SocketAddr::from(([127, 0, 0, 1], http));

    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, READY_PATH, &[]).status != 200 {
        if let Some(status) = proxy.child.try_wait().expect("wait") {
            panic!(
                "cz-proxy exited ({status}) before it was ready:\n{}",
                proxy.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "cz-proxy not ready in 10 s:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("ready: {READY_PATH} answers 200");

    proxy.assert_runs_as_the_image_user(&root);

    let health = get(admin, HEALTH_PATH, &[]);
    assert_eq!(
        health.status,
        200,
        "{HEALTH_PATH}: {health:?}\n{}",
        proxy.log()
    );
    println!("{HEALTH_PATH}: 200 {:?}", health.body.trim());
    let state = get(admin, STATE_PATH, &[]);
    assert_eq!(
        state.status,
        200,
        "{STATE_PATH}: {state:?}\n{}",
        proxy.log()
    );
    println!("{STATE_PATH}: 200 {}", state.body.trim());

    let passed = get(http, "/orders", &[]);
    assert_eq!(
        passed.status,
        200,
        "request without the header: {passed:?}\n{}",
        proxy.log()
    );
    assert_eq!(passed.body, UPSTREAM_BODY, "{passed:?}");
    println!("GET /orders: 200 {:?} (the upstream)", passed.body);

    let intercepted = get(http, "/orders", &[DEFAULT_RULE]);
    assert_eq!(
        intercepted.status,
        503,
        "request with the header: {intercepted:?}\n{}",
        proxy.log()
    );
    assert_eq!(
        intercepted.header(ERROR_HEADER),
        Some("tunnel-disconnected"),
        "{intercepted:?}"
    );
    println!(
        "GET /orders with {DEFAULT_RULE}: 503 {ERROR_HEADER}: tunnel-disconnected, {:?}",
        intercepted.body.trim()
    );
}

/// The `scratch` image: an empty directory, `/cz-proxy`, and the mount points of the devices and
/// the Secret (which the runtime and the kubelet create in a real container).
fn image_filesystem(binary: &Path, root: &Path) {
    fs::create_dir_all(root.join(TLS_DIR.trim_start_matches('/'))).expect("mount point");
    fs::create_dir(root.join("dev")).expect("/dev");
    for device in OCI_DEVICES {
        fs::File::create(root.join("dev").join(device)).expect("device mount point");
    }
    fs::copy(binary, root.join("cz-proxy")).unwrap_or_else(|error| {
        panic!(
            "copying {}: {error}: build it with deploy/build-proxy.sh",
            binary.display()
        )
    });
    fs::set_permissions(root.join("cz-proxy"), fs::Permissions::from_mode(0o555)).expect("chmod");
}

/// The session Secret as the kubelet mounts it for the proxy's pod: root-owned files of group
/// 65532 (the pod's `fsGroup`) and mode 0440 (the volume's `defaultMode`), in a directory of that
/// group with the set-group-ID bit, as the kubelet applies an `fsGroup` (czctl writes the files
/// into a private 0700 directory; the kubelet's volume is not that).
fn kubelet_secret(dir: &Path) {
    fs::create_dir_all(dir).expect("secret directory");
    SessionCa::generate()
        .and_then(|ca| ca.issue_proxy())
        .expect("session certificates")
        .write_to_dir(dir)
        .expect("write the certificates");
    for file in fs::read_dir(dir).expect("secret files") {
        let path = file.expect("secret file").path();
        std::os::unix::fs::chown(&path, Some(0), Some(IMAGE_USER)).expect("chown");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).expect("chmod");
    }
    std::os::unix::fs::chown(dir, Some(0), Some(IMAGE_USER)).expect("chown");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o2750)).expect("chmod");
}

/// Answers every request with [`UPSTREAM_BODY`], one request per connection.
fn serve_upstream(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{UPSTREAM_BODY}",
            UPSTREAM_BODY.len()
        );
        let _ = stream.write_all(response.as_bytes());
    }
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind port 0");
    socket.local_addr().expect("local address").port()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// An HTTP/1.1 GET; status 0 when the connection fails (not listening yet).
fn get(address: SocketAddr, path: &str, headers: &[&str]) -> Answer {
    let failed = |error: std::io::Error| Answer {
        status: 0,
        head: String::new(),
        body: error.to_string(),
    };
    let mut stream = match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(error) => return failed(error),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n{extra}connection: close\r\n\r\n");
    let mut response = String::new();
    if let Err(error) = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_string(&mut response).map(drop))
    {
        return failed(error);
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The proxy's process; killed (and its mount namespace gone) when dropped.
struct RunningProxy {
    child: Child,
    log: PathBuf,
}

impl RunningProxy {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// Its user, groups and root are the image's, and that root is mounted read-only.
    fn assert_runs_as_the_image_user(&self, root: &Path) {
        let proc = PathBuf::from(format!("/proc/{}", self.child.id()));
        let status = fs::read_to_string(proc.join("status")).expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(
            field("Name:"),
            "cz-proxy",
            "the child is not the proxy itself:\n{status}"
        );
        assert_eq!(field("Uid:"), "65532 65532 65532 65532", "{status}");
        assert_eq!(field("Gid:"), "65532 65532 65532 65532", "{status}");
        assert_eq!(field("Groups:"), "", "supplementary groups left: {status}");
        assert_eq!(
            field("CapEff:"),
            "0000000000000000",
            "capabilities left: {status}"
        );
        let proxy_root = fs::read_link(proc.join("root")).expect("/proc/PID/root");
        assert_eq!(proxy_root, root, "the proxy's root directory");
        let mounts = fs::read_to_string(proc.join("mountinfo")).expect("/proc/PID/mountinfo");
        let root_mount = mounts
            .lines()
            .find(|line| line.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no / in the proxy's mountinfo:\n{mounts}"));
        let options = root_mount.split(' ').nth(5).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "/ is writable: {root_mount}"
        );
        println!(
            "runs as uid 65532 gid 65532, no groups, no capabilities, root {} mounted {options}",
            root.display()
        );
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped (after the proxy, which is declared later).
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("cz-image-contract-{}", std::process::id()));
        fs::create_dir_all(&path).expect("temporary directory");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
