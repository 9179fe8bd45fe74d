//! Connecting a session's tunnel to the intercept's proxy: the carrier (a port-forward, direct
//! UDP, or both with UDP given a head start), the resolver that finds a replaced proxy pod
//! before every reconnect, and the wait for the first connection.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cz_shared::tls::Identity;

use super::{InterceptOptions, SetUpError};
use crate::k8s::names::SessionNames;
use crate::k8s::port_forward::{self, PortForwardError};
use crate::k8s::proxy_deployment;
use crate::k8s::proxy_pod::{self, ReadyPod};
use crate::k8s::target::Target;
use crate::tunnel::{
    Carrier, CarrierRefused, CarrierStream, ProxyResolver, ResolveError, StreamOpener,
};
use crate::{Connected, Tunnel, TunnelConfig, TunnelEvent, TunnelMode};

/// How long direct UDP may take to connect before `--tunnel auto` uses the port-forward: a
/// reachable proxy answers within a few round trips.
const DIRECT_HEAD_START: Duration = Duration::from_millis(300);

/// Runs before every (re)connect, given the proxy pod about to be dialled: a session that
/// joined another's proxy registers its route there again, which a replaced proxy pod lacks.
pub(super) type BeforeDial = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), ResolveError>> + Send>> + Send + Sync,
>;

/// Where a session's tunnel goes.
pub(super) struct Dial<'a> {
    pub(super) client: &'a kube::Client,
    /// The session whose proxy serves the intercept.
    pub(super) proxy: &'a SessionNames,
    /// The intercepted Service (the proxy's ports follow from its ports).
    pub(super) target: &'a Target,
    pub(super) options: &'a InterceptOptions,
    pub(super) before_dial: Option<BeforeDial>,
}

impl Dial<'_> {
    /// Starts the tunnel of `identity` to the proxy, forwarding to `local_port`; `proxy_name`
    /// names the proxy in messages.
    pub(super) fn start(
        &self,
        identity: Identity,
        local_port: u16,
        proxy_name: String,
    ) -> Result<Tunnel, SetUpError> {
        let (client, names, options) = (self.client, self.proxy, self.options);
        let ports = proxy_deployment::proxy_ports(self.target);
        let config = TunnelConfig {
            proxy: options
                .tunnel_endpoint
                .clone()
                .unwrap_or_else(|| format!("{proxy_name}:{}", ports.tunnel)),
            identity,
            local_app: SocketAddr::from((Ipv4Addr::LOCALHOST, local_port)),
        };
        // Without an explicit endpoint, each reconnect dials the session's ready proxy pod, so
        // a replaced pod (new IP) is found again.
        let before_dial = self.before_dial.clone();
        let resolver = options
            .tunnel_endpoint
            .is_none()
            .then(|| proxy_resolver(client, names, ports.tunnel, before_dial.clone()));
        let open = carrier_opener(client, names, ports.carrier, before_dial);
        // An explicit UDP endpoint is where the user wants the tunnel: auto means direct there.
        let carrier = match options.tunnel {
            TunnelMode::Direct => Carrier::Direct,
            TunnelMode::Auto if options.tunnel_endpoint.is_some() => Carrier::Direct,
            TunnelMode::PortForward => Carrier::Stream(open),
            TunnelMode::Auto => Carrier::Auto {
                open,
                head_start: DIRECT_HEAD_START,
            },
        };
        Tunnel::start_with_carrier(config, carrier, resolver)
            .map_err(|error| SetUpError::Tunnel(Arc::new(error)))
    }
}

/// Waits for `tunnel` to connect; after `timeout` of failed attempts, fails with the last
/// attempt's error (set-up must not wait forever on a carrier that keeps failing).
pub(super) async fn connect_within(
    tunnel: &Tunnel,
    timeout: Duration,
) -> Result<Connected, SetUpError> {
    let mut events = tunnel.events();
    let mut last_error = String::from("no attempt finished");
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let connected = tunnel.connected();
    tokio::pin!(connected);
    loop {
        tokio::select! {
            connected = &mut connected => return connected.map_err(SetUpError::Tunnel),
            Ok(event) = events.recv() => {
                if let TunnelEvent::ConnectFailed { error, .. } = event {
                    last_error = error;
                }
            }
            () = &mut deadline => return Err(SetUpError::TunnelTimeout { timeout, last_error }),
        }
    }
}

/// Opens the tunnel's carrier: a port-forward to the session's ready proxy pod, at its
/// loopback-only carrier port, after `before_dial` on that pod.
fn carrier_opener(
    client: &kube::Client,
    names: &SessionNames,
    port: u16,
    before_dial: Option<BeforeDial>,
) -> StreamOpener {
    let (client, names) = (client.clone(), names.clone());
    Arc::new(move || {
        let (client, names, before_dial) = (client.clone(), names.clone(), before_dial.clone());
        Box::pin(async move {
            let pod = ready_pod(&client, &names, before_dial).await?;
            match port_forward::open(&client, &names.namespace, pod.name, port).await {
                Ok(stream) => Ok(Box::new(stream) as CarrierStream),
                Err(PortForwardError::Api(error)) if error.is_forbidden() => {
                    Err(CarrierRefused(error.into()).into())
                }
                Err(error) => Err(error.into()),
            }
        })
    })
}

/// The tunnel's resolver: the session's ready proxy pod, at `tunnel_port`, after `before_dial`
/// on that pod.
fn proxy_resolver(
    client: &kube::Client,
    names: &SessionNames,
    tunnel_port: u16,
    before_dial: Option<BeforeDial>,
) -> ProxyResolver {
    let (client, names) = (client.clone(), names.clone());
    Arc::new(move || {
        let (client, names, before_dial) = (client.clone(), names.clone(), before_dial.clone());
        Box::pin(async move {
            let pod = ready_pod(&client, &names, before_dial).await?;
            Ok(pod.tunnel_address(tunnel_port)?)
        })
    })
}

/// The session's ready proxy pod, once `before_dial` ran for it.
async fn ready_pod(
    client: &kube::Client,
    names: &SessionNames,
    before_dial: Option<BeforeDial>,
) -> Result<ReadyPod, ResolveError> {
    let pod = proxy_pod::ready_pod(client, names).await?;
    if let Some(before_dial) = before_dial {
        before_dial(pod.name.clone()).await?;
    }
    Ok(pod)
}
