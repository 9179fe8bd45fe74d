//! Named network namespaces (`ip netns`), the building block of the isolated cluster network:
//! created and configured with iproute2, entered by a short-lived thread to open sockets inside
//! them, deleted when dropped.

use std::io;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Where iproute2 keeps named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A named network namespace; deleted (with the interfaces in it) when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates namespace `name`, replacing a stale one of that name (left by a process that was
    /// killed), with its loopback interface up.
    pub fn create(name: &str) -> io::Result<Self> {
        if path_of(name).exists() {
            delete(name);
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        let namespace = Self {
            name: name.to_owned(),
        };
        namespace.ip_batch("link set lo up\n")?;
        Ok(namespace)
    }

    /// The namespace's name, as `ip netns` lists it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `nsenter --net=PATH`.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// Runs iproute2 `commands` (one per line, as `ip -batch` reads them) inside the namespace.
    pub fn ip_batch(&self, commands: &str) -> io::Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(commands.as_bytes())?;
        check(child.wait_with_output()?, "ip -batch", commands)
    }

    /// Sets `net.` sysctls (`("ipv4.ip_forward", "1")`) inside the namespace.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> io::Result<()> {
        self.enter(|| {
            for (key, value) in settings {
                std::fs::write(format!("/proc/sys/net/{}", key.replace('.', "/")), value)?;
            }
            Ok(())
        })
    }

    /// Runs `inside` on a new thread that has joined the namespace, so the sockets it opens
    /// belong to it (a socket stays in the namespace it was created in). The thread ends with
    /// `inside`, so no other work ever runs in the namespace by mistake.
    pub fn enter<T: Send>(&self, inside: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let file = std::fs::File::open(self.path())?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&file),
                        Some(LinkNameSpaceType::Network),
                    )?;
                    inside()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a thread inside the namespace panicked")))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// The file of namespace `name` (what `nsenter --net=` takes).
pub fn path_of(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Deletes namespace `name`; nothing to report when it is already gone.
fn delete(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "delete", name])
        .stderr(Stdio::null())
        .status();
}

/// Every namespace whose name starts with `prefix`.
pub fn names_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// Deletes every namespace whose name starts with `prefix` (stale ones of a killed cluster).
pub fn delete_with_prefix(prefix: &str) {
    for name in names_with_prefix(prefix) {
        delete(&name);
    }
}

fn run(command: &mut Command) -> io::Result<()> {
    let output = command.stdout(Stdio::null()).output()?;
    check(output, &format!("{command:?}"), "")
}

fn check(output: std::process::Output, what: &str, input: &str) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        if input.is_empty() {
            String::new()
        } else {
            format!("; input:\n{input}")
        }
    )))
}
