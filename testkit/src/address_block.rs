//! Address blocks: each running cluster on this machine claims one, for its pod addresses
//! (127.<10 + 2i>.x.y), its ClusterIPs (127.<11 + 2i>.x.y), its share of the NodePort range and
//! its network namespaces' names — in this process or another (two test suites at once, a
//! `cz-testkit up` beside a test run). A block is claimed by a lock on a file in the temporary
//! directory, held for the cluster's life and released by the OS however the process ends; the
//! file records the cluster's API address and network namespace, for `cz-testkit exec`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::store::service::NODE_PORT_RANGE;

/// How many address blocks there are.
const ADDRESS_BLOCKS: u8 = 50;

/// A claimed address block; released when dropped.
#[derive(Debug)]
pub struct AddressBlock {
    index: u8,
    lock: File,
}

impl AddressBlock {
    /// Claims a block no other running cluster on this machine holds.
    pub fn claim() -> anyhow::Result<Self> {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let start = (std::process::id() % u32::from(ADDRESS_BLOCKS)) as u8;
        let offset = NEXT.fetch_add(7, Ordering::Relaxed);
        for step in 0..ADDRESS_BLOCKS {
            let index = ((u16::from(start) + u16::from(offset) + u16::from(step))
                % u16::from(ADDRESS_BLOCKS)) as u8;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock_path(index))?;
            if lock.try_lock().is_ok() {
                return Ok(Self { index, lock });
            }
        }
        anyhow::bail!(
            "all {ADDRESS_BLOCKS} loopback address blocks are taken by running clusters (lock files cz-testkit-addresses-*.lock in {})",
            std::env::temp_dir().display()
        )
    }

    /// The block's number.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Second octet of pod addresses.
    pub fn pod_octet(&self) -> u8 {
        10 + self.index * 2
    }

    /// Second octet of ClusterIPs.
    pub fn service_octet(&self) -> u8 {
        11 + self.index * 2
    }

    /// The block's share of the NodePort range.
    pub fn node_ports(&self) -> std::ops::Range<u16> {
        let share =
            (NODE_PORT_RANGE.end() - NODE_PORT_RANGE.start() + 1) / u16::from(ADDRESS_BLOCKS);
        let start = NODE_PORT_RANGE.start() + u16::from(self.index) * share;
        start..start + share
    }

    /// Records the cluster's API address and network namespace (empty when shared) for
    /// [`find_cluster_network`].
    pub fn record(
        &mut self,
        api: std::net::SocketAddr,
        namespace: Option<&str>,
    ) -> std::io::Result<()> {
        self.lock.set_len(0)?;
        writeln!(self.lock, "{api} {}", namespace.unwrap_or_default())
    }
}

/// The lock file of block `index`.
fn lock_path(index: u8) -> PathBuf {
    std::env::temp_dir().join(format!("cz-testkit-addresses-{index}.lock"))
}

/// The cluster network of the running cluster whose API server listens at `api` (any running
/// cluster's when `None`, if exactly one runs): `Ok(None)` when that cluster's network is shared.
pub fn find_cluster_network(api: Option<&str>) -> anyhow::Result<Option<String>> {
    let mut running = Vec::new();
    for index in 0..ADDRESS_BLOCKS {
        let Ok(file) = std::fs::File::open(lock_path(index)) else {
            continue;
        };
        if file.try_lock_shared().is_ok() {
            continue; // nobody holds it: no cluster runs on this block
        }
        let Ok(record) = std::fs::read_to_string(lock_path(index)) else {
            continue;
        };
        let mut fields = record.split_whitespace();
        let (Some(address), namespace) = (fields.next(), fields.next()) else {
            continue;
        };
        running.push((address.to_owned(), namespace.map(str::to_owned)));
    }
    let chosen: Vec<_> = running
        .iter()
        .filter(|(address, _)| api.is_none_or(|api| api == address))
        .collect();
    match chosen.as_slice() {
        [(_, namespace)] => Ok(namespace.clone()),
        [] => anyhow::bail!(
            "no loopback cluster {}is running on this machine (start one with `cz-testkit up`)",
            api.map(|api| format!("with its API server at {api} ")).unwrap_or_default()
        ),
        several => anyhow::bail!(
            "{} loopback clusters are running (API servers at {}): say which with --kubeconfig or KUBECONFIG",
            several.len(),
            several.iter().map(|(address, _)| address.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}
