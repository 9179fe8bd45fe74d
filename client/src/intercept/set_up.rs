//! The steps of setting up an intercept, in order: certificates, shadow Service, Secret (owned by
//! the shadow Service), proxy Deployment, the proxy's readiness, the selector switch, the tunnel.
//! Each created object is recorded as it is created, so a failure part-way undoes exactly what
//! was done (the Secret by going with the shadow Service).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cz_shared::tls::SessionCa;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::PostParams;
use kube::Api;

use super::{Blueprint, InterceptOptions, SetUpError};
use crate::k8s::api_error::CallContext;
use crate::k8s::cleanup::ENDPOINT_PROPAGATION;
use crate::k8s::names::SessionNames;
use crate::k8s::owned::{ObjectRef, SessionObject};
use crate::k8s::port_forward::PortForwardError;
use crate::k8s::record::Record;
use crate::k8s::target::Target;
use crate::k8s::{port_forward, proxy_deployment, proxy_pod, selector};
use crate::progress::Progress;
use crate::tunnel::{Carrier, CarrierRefused, CarrierStream, ProxyResolver, StreamOpener};
use crate::{Connected, Tunnel, TunnelConfig, TunnelEvent, TunnelMode};

/// How long direct UDP may take to connect before `--tunnel auto` uses the port-forward: a
/// reachable proxy answers within a few round trips.
const DIRECT_HEAD_START: Duration = Duration::from_millis(300);

/// The steps of setting up, in order.
pub(super) struct SetUp<'a> {
    pub(super) client: &'a kube::Client,
    pub(super) names: &'a SessionNames,
    pub(super) target: &'a Target,
    pub(super) record: &'a Record,
    pub(super) options: &'a InterceptOptions,
    /// The objects to create.
    pub(super) blueprint: Blueprint<'a>,
}

impl SetUp<'_> {
    pub(super) async fn run(
        &self,
        created: &mut Vec<ObjectRef>,
        progress: &mut impl FnMut(Progress),
    ) -> Result<Tunnel, SetUpError> {
        let (client, names, target, options) = (self.client, self.names, self.target, self.options);
        let namespace = names.namespace.as_str();
        let (proxy_identity, laptop_identity) = SessionCa::generate()
            .and_then(|ca| Ok((ca.issue_proxy()?, ca.issue_client()?)))
            .map_err(SetUpError::Certificates)?;
        let post = PostParams::default();

        let shadow = Api::<Service>::namespaced(client.clone(), namespace)
            .create(&post, &self.blueprint.shadow_service())
            .await
            .during::<Service>("create", Some(namespace))?;
        created.extend(ObjectRef::from_meta(
            SessionObject::ShadowService,
            &shadow.metadata,
        ));
        let shadow_ip = shadow
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.clone())
            .unwrap_or_default();
        progress(Progress::Created(format!(
            "shadow service {} ({shadow_ip})",
            names.shadow()
        )));

        // Owned by the shadow Service, the Secret goes with it (the cluster's garbage collector
        // deletes it): czctl never reads, lists or deletes Secrets, so the Role grants only
        // `create` on them and nobody bound to it can read the namespace's Secrets.
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&post, &self.blueprint.secret(&proxy_identity, &shadow))
            .await
            .during::<Secret>("create", Some(namespace))?;
        progress(Progress::Created(format!(
            "secret {} (owned by the shadow service, removed with it)",
            names.secret()
        )));

        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
            .create(&post, &self.blueprint.proxy_deployment(&shadow_ip))
            .await
            .during::<Deployment>("create", Some(namespace))?;
        created.extend(ObjectRef::from_meta(
            SessionObject::ProxyDeployment,
            &deployment.metadata,
        ));
        progress(Progress::Created(format!(
            "proxy deployment {} ({})",
            names.proxy(),
            options.proxy_image
        )));

        progress(Progress::WaitingForProxy);
        let started = std::time::Instant::now();
        let pod_ip = proxy_pod::wait_ready(client, names, options.timeout).await?;
        progress(Progress::ProxyReady(started.elapsed()));

        let services = Api::<Service>::namespaced(client.clone(), namespace);
        selector::switch(&services, namespace, &target.service, self.record).await?;
        let switched = tokio::time::Instant::now();
        progress(Progress::Switched);

        let ports = proxy_deployment::proxy_ports(target);
        let tunnel_port = ports.tunnel;
        let config = TunnelConfig {
            proxy: options
                .tunnel_endpoint
                .clone()
                .unwrap_or_else(|| format!("{pod_ip}:{tunnel_port}")),
            identity: laptop_identity,
            local_app: SocketAddr::from((Ipv4Addr::LOCALHOST, self.record.local_port)),
        };
        // Without an explicit endpoint, each reconnect dials the session's ready proxy pod, so
        // a replaced pod (new IP) is found again.
        let resolver = options
            .tunnel_endpoint
            .is_none()
            .then(|| proxy_resolver(client, names, tunnel_port));
        let open = carrier_opener(client, names, ports.carrier);
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
        let tunnel = Tunnel::start_with_carrier(config, carrier, resolver)
            .map_err(|error| SetUpError::Tunnel(Arc::new(error)))?;
        let connected = connect_within(&tunnel, options.timeout).await?;
        progress(Progress::TunnelConnected(connected));
        // kube-proxy follows the switch late; the summary that comes next promises that matching
        // requests reach the laptop, so it waits until Services have had that time.
        tokio::time::sleep_until(switched + ENDPOINT_PROPAGATION).await;
        Ok(tunnel)
    }
}

/// Waits for `tunnel` to connect; after `timeout` of failed attempts, fails with the last
/// attempt's error (set-up must not wait forever on a carrier that keeps failing).
async fn connect_within(tunnel: &Tunnel, timeout: Duration) -> Result<Connected, SetUpError> {
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
/// loopback-only carrier port.
fn carrier_opener(client: &kube::Client, names: &SessionNames, port: u16) -> StreamOpener {
    let (client, names) = (client.clone(), names.clone());
    Arc::new(move || {
        let (client, names) = (client.clone(), names.clone());
        Box::pin(async move {
            let pod = proxy_pod::ready_pod_name(&client, &names).await?;
            match port_forward::open(&client, &names.namespace, pod, port).await {
                Ok(stream) => Ok(Box::new(stream) as CarrierStream),
                Err(PortForwardError::Api(error)) if error.is_forbidden() => {
                    Err(CarrierRefused(error.into()).into())
                }
                Err(error) => Err(error.into()),
            }
        })
    })
}

/// The tunnel's resolver: the session's ready proxy pod, at `tunnel_port`.
fn proxy_resolver(client: &kube::Client, names: &SessionNames, tunnel_port: u16) -> ProxyResolver {
    let (client, names) = (client.clone(), names.clone());
    Arc::new(move || {
        let (client, names) = (client.clone(), names.clone());
        Box::pin(async move {
            proxy_pod::tunnel_address(&client, &names, tunnel_port)
                .await
                .map_err(Into::into)
        })
    })
}
