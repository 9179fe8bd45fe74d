//! The processes of a run: started pinned with `taskset`, recorded as exact command lines,
//! measured through /proc, and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where a process may run: one CPU, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    /// Pinned to this CPU.
    Pin(u8),
    /// Anywhere.
    All,
}

/// The command lines of a run, in the order they ran.
#[derive(Default)]
pub struct CommandLog(pub Vec<String>);

impl CommandLog {
    /// Builds `program args…` under `taskset` when pinned, and logs it.
    pub fn command(&mut self, cpus: Cpus, program: &Path, args: &[String]) -> Command {
        // Always through taskset: a child would otherwise inherit cz-bench's own pinning.
        let cpu_list = match cpus {
            Cpus::Pin(cpu) => cpu.to_string(),
            Cpus::All => online_cpus(),
        };
        let mut command = Command::new("taskset");
        command.arg("-c").arg(&cpu_list).arg(program).args(args);
        let mut line = format!("taskset -c {cpu_list} {}", program.display());
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        if !self.0.contains(&line) {
            self.0.push(line);
        }
        command
    }
}

/// The machine's CPUs as a taskset list, e.g. `0-1`.
fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map_or_else(|_| "0-1".to_owned(), |list| list.trim().to_owned())
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A process of the run, killed (with its children) when dropped.
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// Starts `command` with its output discarded.
    pub fn spawn(name: &'static str, mut command: Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        Ok(Self { name, child })
    }

    /// Starts `command` and waits up to `timeout` until it prints a line starting with `marker`
    /// on stdout (e.g. a readiness line); the rest of its output is discarded.
    pub fn spawn_until_line(
        name: &'static str,
        command: Command,
        marker: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (mut process, line) = Self::spawn_watching(name, command, marker)?;
        let deadline = Instant::now() + timeout;
        while line
            .seen_at
            .recv_timeout(Duration::from_millis(50))
            .is_err()
        {
            process.check_running()?;
            if Instant::now() > deadline {
                bail!("{name} did not print {marker:?} within {timeout:?}");
            }
        }
        Ok(process)
    }

    /// Starts `command` and watches its stdout for a line starting with `marker` (the rest of
    /// its output is discarded); the returned [`MarkedLine`] tells when it came.
    pub fn spawn_watching(
        name: &'static str,
        mut command: Command,
        marker: &'static str,
    ) -> anyhow::Result<(Self, MarkedLine)> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (seen_tx, seen_at) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(marker) {
                    let _ = seen_tx.send(Instant::now());
                }
            }
        });
        Ok((
            Self { name, child },
            MarkedLine {
                seen_at,
                first: None,
            },
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited already.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Asks the process to stop (SIGTERM), as Ctrl-C would; see [`Self::exit_status`].
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Reaped already (its pid may be another process's by now): nothing to stop.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first, so NGINX's master stops its workers; then make sure.
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When a process started by [`Process::spawn_watching`] printed its marked line.
pub struct MarkedLine {
    seen_at: std::sync::mpsc::Receiver<Instant>,
    first: Option<Instant>,
}

impl MarkedLine {
    /// When the line first came, if it has by now.
    pub fn seen(&mut self) -> Option<Instant> {
        if self.first.is_none() {
            self.first = self.seen_at.try_recv().ok();
        }
        self.first
    }
}

/// A free TCP port on 127.0.0.1 (for programs configured by port number).
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`, or fails after 10 s.
pub fn wait_for_port(process: &mut Process, port: u16) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        process.check_running()?;
        if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} is not listening on {port} after 10 s", process.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of `roots` and of all their descendants (NGINX's workers, `taskset`'s exec).
pub fn tree(roots: &[u32]) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(fields) = stat_fields(pid) {
                if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut pids = roots.to_vec();
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    pids
}

/// The fields of /proc/PID/stat after the command name: state, ppid, ….
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    Some(after_name.split(' ').map(str::to_owned).collect())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time used by processes, in seconds, split by where it was spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// In the processes' own code (utime).
    pub user: f64,
    /// In the kernel on their behalf (stime): system calls, and the network stack's work they
    /// set off.
    pub system: f64,
}

impl CpuTime {
    /// User and system time together.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTime {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// CPU time used so far by `roots` and their descendants.
pub fn cpu_time(roots: &[u32]) -> CpuTime {
    let ticks = tree(roots)
        .into_iter()
        .filter_map(stat_fields)
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        .map(|f| [11, 12].map(|field| f[field].parse::<u64>().unwrap_or(0)))
        .fold([0, 0], |[user, system], [u, s]| [user + u, system + s]);
    let seconds = |ticks: u64| ticks as f64 / clock_ticks_per_second();
    CpuTime {
        user: seconds(ticks[0]),
        system: seconds(ticks[1]),
    }
}

/// Resident memory (VmRSS) of `roots` and their descendants, in MB.
pub fn rss_mb(roots: &[u32]) -> f64 {
    let kib: u64 = tree(roots)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    kib as f64 / 1024.0
}

/// Samples a figure on a thread of its own, keeping the peak: e.g. the resident memory of some
/// processes every 50 ms.
pub struct PeakSampler {
    stop_tx: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<f64>,
}

impl PeakSampler {
    /// Starts sampling the resident memory (MB) of `pids` and their descendants every 50 ms.
    pub fn rss(pids: Vec<u32>) -> Self {
        Self::start(Duration::from_millis(50), move || rss_mb(&pids))
    }

    /// Starts sampling `measure` every `interval`.
    pub fn start(interval: Duration, mut measure: impl FnMut() -> f64 + Send + 'static) -> Self {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            loop {
                peak = peak.max(measure());
                match stop_rx.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return peak,
                }
            }
        });
        Self { stop_tx, thread }
    }

    /// The peak seen.
    pub fn stop(self) -> f64 {
        let _ = self.stop_tx.send(());
        self.thread.join().unwrap_or(0.0)
    }
}

/// The pid of the first process named `name` (its `comm`) among `root` and its descendants.
pub fn descendant_named(root: u32, name: &str) -> Option<u32> {
    tree(&[root]).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
    })
}

/// Whether process `pid` exists (and is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}
