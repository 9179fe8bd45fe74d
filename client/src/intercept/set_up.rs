//! The steps of setting up an intercept, in order: certificates, shadow Service, Secret (owned by
//! the shadow Service), proxy Deployment, the proxy's readiness, the selector switch, the tunnel.
//! Each created object is recorded as it is created, so a failure part-way undoes exactly what
//! was done (the Secret by going with the shadow Service).

use cz_shared::tls::SessionCa;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::PostParams;
use kube::Api;

use super::connect::{connect_within, Dial};
use super::{Blueprint, InterceptOptions, SetUpError};
use crate::k8s::api_error::CallContext;
use crate::k8s::cleanup::ENDPOINT_PROPAGATION;
use crate::k8s::names::SessionNames;
use crate::k8s::owned::{ObjectRef, SessionObject};
use crate::k8s::record::Record;
use crate::k8s::target::Target;
use crate::k8s::{proxy_pod, selector};
use crate::progress::Progress;
use crate::Tunnel;

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

        let dial = Dial {
            client,
            proxy: names,
            target,
            options,
            before_dial: None,
        };
        let tunnel = dial.start(laptop_identity, self.record.local_port, pod_ip)?;
        let connected = connect_within(&tunnel, options.timeout).await?;
        progress(Progress::TunnelConnected(connected));
        // kube-proxy follows the switch late; the summary that comes next promises that matching
        // requests reach the laptop, so it waits until Services have had that time.
        tokio::time::sleep_until(switched + ENDPOINT_PROPAGATION).await;
        Ok(tunnel)
    }
}
