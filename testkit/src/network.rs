//! The cluster network: where pods and Service ClusterIPs live, and who can reach them.
//!
//! - **Shared**: pods and ClusterIPs are addresses on the machine's loopback (pod
//!   `127.<p>.x.y`, Service `127.<s>.x.y`); anything on the machine reaches them.
//! - **Isolated**, as on a real cluster: a network namespace stands for the node (the cluster
//!   network); it holds the ClusterIPs and routes to one namespace per pod, with the pod's
//!   address on its `eth0` and a loopback of its own. The host reaches neither pods nor
//!   ClusterIPs: the same addresses there are its own loopback, where nothing listens, so a
//!   connection is refused and no packet leaves the machine. The API server (on the host) reaches
//!   pods as a kubelet does — port-forward dials 127.0.0.1 inside the pod — and NodePorts
//!   forward from the host's 127.0.0.1 into the cluster network.
//!
//! Isolation keeps the 127/8 addresses of the shared mode: inside the cluster network's
//! namespaces, `route_localnet` lets them travel over veth pairs, each loopback keeps only
//! 127.0.0.1, and the neighbours are static (the kernel does not ARP for 127/8).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

use crate::netns::{self, NetNs};

/// Which network the cluster runs: chosen by `cz-testkit up --network` and
/// [`crate::ClusterOptions::network`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// Isolated when this machine allows it (root), shared otherwise.
    #[default]
    Auto,
    /// Pods and ClusterIPs on the machine's loopback, reachable from the host.
    Shared,
    /// Pods and ClusterIPs in network namespaces of their own; fails when that is impossible.
    Isolated,
}

/// Why an isolated network cannot be made here, if it cannot.
fn isolation_unavailable() -> Option<&'static str> {
    if !crate::run_as::is_root() {
        return Some(
            "network namespaces for the cluster need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        );
    }
    if which("ip").is_none() {
        return Some(
            "network namespaces for the cluster need iproute2's `ip` (apt install iproute2)",
        );
    }
    if which("nsenter").is_none() {
        return Some("pods in network namespaces start through util-linux's `nsenter` (apt install util-linux)");
    }
    None
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// The cluster's network.
#[derive(Debug)]
pub struct ClusterNetwork {
    /// The node's namespace; `None` for the shared network.
    node: Option<NetNs>,
    /// Prefix of every namespace of this cluster (`cz-testkit-<block>-`).
    prefix: String,
    /// The node's address on the cluster network: the pods' gateway.
    node_ip: Ipv4Addr,
    /// Pods by address, for port-forward.
    pods: Mutex<HashMap<Ipv4Addr, Weak<PodNetwork>>>,
    next_link: AtomicU32,
}

impl ClusterNetwork {
    /// Makes the network for address block `block`, whose pods are `127.<pod_octet>.x.y` and
    /// ClusterIPs `127.<service_octet>.x.y`. With [`NetworkMode::Auto`] on a machine that cannot
    /// isolate, the network is shared and the second value says why, in one line.
    pub fn new(
        mode: NetworkMode,
        block: u8,
        pod_octet: u8,
        service_octet: u8,
    ) -> io::Result<(Self, Option<String>)> {
        let prefix = format!("cz-testkit-{block}-");
        let node_ip = Ipv4Addr::new(127, pod_octet, 0, 1);
        let network = |node, prefix| Self {
            node,
            prefix,
            node_ip,
            pods: Mutex::default(),
            next_link: AtomicU32::new(0),
        };
        let unavailable = isolation_unavailable();
        match (mode, unavailable) {
            (NetworkMode::Shared, _) => return Ok((network(None, prefix), None)),
            (NetworkMode::Auto, Some(reason)) => {
                return Ok((
                    network(None, prefix),
                    Some(format!("network shared: pods and ClusterIPs are reachable from this machine, because {reason}")),
                ))
            }
            (NetworkMode::Isolated, Some(reason)) => {
                return Err(io::Error::other(format!(
                    "cannot isolate the cluster network: {reason}"
                )))
            }
            (_, None) => {}
        }
        // This cluster holds the block's lock: whatever carries its prefix is stale.
        netns::delete_with_prefix(&prefix);
        let node = NetNs::create(&format!("{prefix}node"))?;
        node.sysctls(&[
            ("ipv4.conf.all.route_localnet", "1"),
            ("ipv4.conf.default.route_localnet", "1"),
            ("ipv4.ip_forward", "1"),
        ])?;
        node.ip_batch(&format!(
            "address del 127.0.0.1/8 dev lo\n\
             address add 127.0.0.1/32 dev lo\n\
             address add {node_ip}/32 dev lo scope global\n\
             route add local 127.{service_octet}.0.0/16 dev lo table local\n"
        ))?;
        Ok((network(Some(node), prefix), None))
    }

    /// The node's namespace (for `cz-testkit exec`), when the network is isolated.
    pub fn namespace(&self) -> Option<&str> {
        self.node.as_ref().map(NetNs::name)
    }

    /// Connects to `address` from the node, as kube-proxy and the kubelet's probes do.
    pub async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        match &self.node {
            None => TcpStream::connect(address).await,
            Some(node) => node.enter(TcpSocket::new_v4)?.connect(address).await,
        }
    }

    /// A TCP listener on `address` on the node (a ClusterIP).
    pub fn bind_tcp(&self, address: SocketAddr) -> io::Result<TcpListener> {
        listen_tcp(self.node.as_ref(), address)
    }

    /// A UDP socket on `address` on the node (a ClusterIP, or a flow's socket).
    pub fn bind_udp(&self, address: SocketAddr) -> io::Result<UdpSocket> {
        bind_udp(self.node.as_ref(), address)
    }

    /// Gives pod address `ip` a network: in the isolated network, a namespace linked to the
    /// node. It lasts as long as the returned value.
    pub fn attach(&self, ip: Ipv4Addr) -> io::Result<Arc<PodNetwork>> {
        let namespace = match &self.node {
            None => None,
            Some(node) => Some(self.link_pod(node, ip)?),
        };
        let pod = Arc::new(PodNetwork { ip, namespace });
        let mut pods = self.pods.lock().expect("not poisoned");
        pods.retain(|_, pod| pod.strong_count() > 0);
        pods.insert(ip, Arc::downgrade(&pod));
        Ok(pod)
    }

    /// The network of the running pod at `ip`.
    pub fn pod(&self, ip: Ipv4Addr) -> Option<Arc<PodNetwork>> {
        self.pods.lock().expect("not poisoned").get(&ip)?.upgrade()
    }

    /// A namespace for the pod at `ip`, with a veth pair to the node: static neighbours on both
    /// ends, a /32 route to the pod on the node, everything else in the pod via the node.
    fn link_pod(&self, node: &NetNs, ip: Ipv4Addr) -> io::Result<NetNs> {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let [a, b, c, d] = link.to_be_bytes();
        let (node_mac, pod_mac) = (
            format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
            format!("02:01:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
        );
        let node_ip = self.node_ip;
        let pod = NetNs::create(&format!("{}{ip}", self.prefix))?;
        let node_end = format!("pod{link}");
        node.ip_batch(&format!(
            "link add {node_end} address {node_mac} type veth peer name eth0 address {pod_mac} netns {pod_ns}\n\
             link set {node_end} up\n\
             route add {ip}/32 dev {node_end} src {node_ip}\n\
             neighbour add {ip} lladdr {pod_mac} dev {node_end} nud permanent\n",
            pod_ns = pod.name(),
        ))?;
        pod.sysctls(&[
            ("ipv4.conf.all.route_localnet", "1"),
            ("ipv4.conf.eth0.route_localnet", "1"),
        ])?;
        pod.ip_batch(&format!(
            "address del 127.0.0.1/8 dev lo\n\
             address add 127.0.0.1/32 dev lo\n\
             address add {ip}/32 dev eth0 scope global\n\
             link set eth0 up\n\
             route add 127.0.0.0/8 via {node_ip} dev eth0 onlink src {ip}\n\
             neighbour add {node_ip} lladdr {node_mac} dev eth0 nud permanent\n"
        ))?;
        Ok(pod)
    }
}

impl Drop for ClusterNetwork {
    fn drop(&mut self) {
        if self.node.is_some() {
            // Pods outlived by the cluster (their tasks not yet dropped) go with it.
            netns::delete_with_prefix(&self.prefix);
        }
    }
}

/// One pod's network: its address, and in the isolated network its namespace (deleted, with its
/// link to the node, when the last holder drops it).
#[derive(Debug)]
pub struct PodNetwork {
    ip: Ipv4Addr,
    namespace: Option<NetNs>,
}

impl PodNetwork {
    /// The pod's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Where a server in the pod asking for `ip:port` listens: there, in its own namespace; on
    /// the shared loopback, at the pod's own address whatever it asked for (0.0.0.0 or
    /// 127.0.0.1 there would be the host's).
    fn listen_address(&self, ip: Ipv4Addr, port: u16) -> SocketAddr {
        let ip = match self.namespace {
            Some(_) => ip,
            None => self.ip,
        };
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    }

    /// A TCP listener of a server in the pod, on `ip:port` (`0.0.0.0` for every address).
    pub fn bind_tcp(&self, ip: Ipv4Addr, port: u16) -> io::Result<TcpListener> {
        listen_tcp(self.namespace.as_ref(), self.listen_address(ip, port))
    }

    /// A UDP socket of a server in the pod, on `ip:port`.
    pub fn bind_udp(&self, ip: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
        bind_udp(self.namespace.as_ref(), self.listen_address(ip, port))
    }

    /// Connects to `port` the way port-forward does: to 127.0.0.1 inside the pod, so a server
    /// listening on the pod's loopback only is reachable this way and no other (on the shared
    /// network, to the pod's address).
    pub async fn connect_inside(&self, port: u16) -> io::Result<TcpStream> {
        let stream = match &self.namespace {
            None => TcpStream::connect((self.ip, port)).await?,
            Some(namespace) => {
                namespace
                    .enter(TcpSocket::new_v4)?
                    .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .await?
            }
        };
        // As the kubelet's and container runtimes' Go dialers do.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The command line that starts `argv` inside the pod's network; on the shared network,
    /// `argv` itself.
    pub fn command_line(&self, argv: Vec<OsString>) -> Vec<OsString> {
        match &self.namespace {
            None => argv,
            Some(namespace) => {
                let mut line = vec![
                    OsString::from("nsenter"),
                    format!("--net={}", namespace.path().display()).into(),
                    "--".into(),
                ];
                line.extend(argv);
                line
            }
        }
    }

    /// The address a process must bind to on the shared network (its `--bind-ip`); `None` in
    /// a namespace of its own, where it binds every address as in a real pod.
    pub fn bind_ip(&self) -> Option<Ipv4Addr> {
        self.namespace.is_none().then_some(self.ip)
    }
}

fn listen_tcp(namespace: Option<&NetNs>, address: SocketAddr) -> io::Result<TcpListener> {
    let bind = || {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    TcpListener::from_std(match namespace {
        None => bind()?,
        Some(namespace) => namespace.enter(bind)?,
    })
}

fn bind_udp(namespace: Option<&NetNs>, address: SocketAddr) -> io::Result<UdpSocket> {
    let bind = || {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    UdpSocket::from_std(match namespace {
        None => bind()?,
        Some(namespace) => namespace.enter(bind)?,
    })
}
