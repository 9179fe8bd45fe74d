//! An intercept, start to finish: check the Service, make the session's certificates, create the
//! Secret, shadow Service and proxy Deployment, wait until the proxy is ready, switch the
//! Service's selector, connect the tunnel — and undo it all in reverse, on request or on failure.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cz_shared::tls::{SessionCa, TlsError};
use cz_shared::InterceptRule;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;

use crate::k8s::selector::{self, Record, Restored};
use crate::k8s::target::{self, Target};
use crate::k8s::{owner_reference, proxy_deployment, secret, shadow_service, SessionNames};
use crate::{Tunnel, TunnelConfig, TunnelError};

/// What to intercept and how.
#[derive(Debug, Clone)]
pub struct InterceptOptions {
    /// Namespace of the Service.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// The Service port; optional when it has only one.
    pub remote_port: Option<u16>,
    /// The laptop port; defaults to the remote port.
    pub local_port: Option<u16>,
    /// Which requests go to the laptop.
    pub rule: InterceptRule,
    /// The proxy image.
    pub proxy_image: String,
    /// Pull secret for the proxy image.
    pub image_pull_secret: Option<String>,
    /// How long the proxy may take to become ready.
    pub timeout: Duration,
    /// Dial the tunnel here instead of the proxy pod's IP.
    pub tunnel_endpoint: Option<String>,
}

/// Why an intercept could not start (or stop cleanly). Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The Kubernetes API refused or failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// No such Service.
    #[error("service \"{name}\" not found in namespace \"{namespace}\"{}", match candidates.as_slice() {
        [] => "; it has no services (pick another namespace with -n)".to_owned(),
        some => format!("; services there, closest first: {}", some.join(", ")),
    })]
    ServiceNotFound {
        /// Namespace searched.
        namespace: String,
        /// Service asked for.
        name: String,
        /// Services of the namespace, closest names first.
        candidates: Vec<String>,
    },
    /// The Service selects no pods by label.
    #[error("service {namespace}/{name} has no selector (its endpoints are managed by hand or by another controller), so czctl cannot redirect it; intercept the Service that selects your pods instead")]
    NoSelector {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
    },
    /// Someone intercepts it already.
    #[error("service {namespace}/{name} is already intercepted by {} since {} (session {}, header {}); if that session is gone, clean up with: czctl service intercept {name} -n {namespace} --clean", record.owner, record.since, record.session, record.header)]
    AlreadyIntercepted {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
        /// The other session.
        record: Box<Record>,
    },
    /// The port is ambiguous or wrong.
    #[error("service {namespace}/{name} {}: {}; choose one with -r/--remotePort", given.map_or("has several ports".to_owned(), |p| format!("has no port {p}")), ports.join(", "))]
    PortNeeded {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
        /// The port given, if any.
        given: Option<u16>,
        /// The Service's ports.
        ports: Vec<String>,
    },
    /// A named targetPort matches no container port.
    #[error("service {name} targets the port named \"{port_name}\", but no pod it selects declares a container port with that name; start the workload, or intercept by number with -r")]
    UnresolvedPort {
        /// Service.
        name: String,
        /// The port name.
        port_name: String,
    },
    /// Someone changed the Service while czctl switched or restored it.
    #[error("service {name} was changed by someone else at the same moment; czctl changed nothing, try again")]
    ChangedMeanwhile {
        /// Service.
        name: String,
    },
    /// The proxy did not become ready.
    #[error("the proxy did not become ready within {timeout:?}: {reason}; everything czctl created was removed. If the image cannot be pulled, push it to a registry the cluster can reach and pass --proxy-image (and --image-pull-secret)")]
    ProxyNotReady {
        /// The time allowed.
        timeout: Duration,
        /// What the pod and its events say.
        reason: String,
    },
    /// The session certificates could not be made.
    #[error(transparent)]
    Certificates(#[from] TlsError),
    /// Interrupted (Ctrl-C or SIGTERM) while setting up.
    #[error("interrupted while setting up; everything czctl created was removed")]
    Interrupted,
    /// The tunnel could not connect.
    #[error("the tunnel to the proxy failed: {0}; the intercept was undone")]
    Tunnel(Arc<TunnelError>),
}

/// A step of [`Intercept::start`] or [`Intercept::stop`], for progress output.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Progress {
    /// The Service and port were checked.
    Checked {
        /// `namespace/service`.
        service: String,
        /// The port.
        port: String,
    },
    /// An object was created.
    Created(String),
    /// Waiting for the proxy to become ready.
    WaitingForProxy,
    /// The proxy is ready.
    ProxyReady(Duration),
    /// The Service now routes through the proxy.
    Switched,
    /// The tunnel is connected.
    TunnelConnected(SocketAddr),
    /// The Service's selector is restored.
    Restored,
    /// Someone else changed the selector meanwhile; it was left as they set it.
    LeftAsChanged(String),
    /// An object was deleted.
    Deleted(String),
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checked { service, port } => write!(f, "service {service} port {port} can be intercepted"),
            Self::Created(what) => write!(f, "created {what}"),
            Self::WaitingForProxy => write!(f, "waiting for the proxy to become ready"),
            Self::ProxyReady(took) => write!(f, "proxy ready after {:.1}s", took.as_secs_f64()),
            Self::Switched => write!(f, "service now routes through the proxy"),
            Self::TunnelConnected(proxy) => write!(f, "tunnel connected to {proxy}"),
            Self::Restored => write!(f, "service selector restored"),
            Self::LeftAsChanged(selector) => write!(f, "service selector was changed by someone else during the intercept; left as they set it ({selector})"),
            Self::Deleted(what) => write!(f, "deleted {what}"),
        }
    }
}

/// How long Services may keep sending new connections to the proxy after the selector is
/// restored: kube-proxy applies endpoint changes a second or so late, so the proxy is removed
/// only after this.
pub const ENDPOINT_PROPAGATION: Duration = Duration::from_secs(2);

/// How long [`Intercept::stop`] lets in-flight intercepted requests finish before it closes the
/// tunnel (the proxy pod's termination grace period).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running intercept.
pub struct Intercept {
    client: kube::Client,
    names: SessionNames,
    record: Record,
    tunnel: Tunnel,
}

fn owner() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

impl Intercept {
    /// The Service and port that would be intercepted, and what would be created: for
    /// `--dry-run`.
    pub async fn plan(
        client: &kube::Client,
        options: &InterceptOptions,
    ) -> Result<Plan, InterceptError> {
        let target = target::resolve(
            client,
            &options.namespace,
            &options.service,
            options.remote_port,
        )
        .await?;
        let names = SessionNames::new(&options.namespace, &options.service);
        let owner = owner_reference(&target.service);
        let shadow = shadow_service::build(&names, &target, owner.clone());
        let header = options.rule.to_string();
        let spec = proxy_deployment::ProxySpec {
            target: &target,
            shadow_ip: "<shadow ClusterIP>",
            header: &header,
            image: &options.proxy_image,
            image_pull_secret: options.image_pull_secret.as_deref(),
        };
        let deployment = proxy_deployment::build(&names, &spec, owner.clone());
        let mut secret = secret::build(&names, &SessionCa::generate()?.issue_proxy()?, owner);
        secret.data = secret.data.map(|data| {
            data.into_keys()
                .map(|k| (k, k8s_openapi::ByteString(b"<generated>".to_vec())))
                .collect()
        });
        let record = Self::new_record(&names, &target, options);
        Ok(Plan {
            secret,
            shadow,
            deployment,
            record,
        })
    }

    fn new_record(names: &SessionNames, target: &Target, options: &InterceptOptions) -> Record {
        let remote_port = target.port().port.port as u16;
        Record {
            session: names.id.clone(),
            original_selector: target
                .service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default(),
            proxy_selector: names.proxy_selector(),
            header: options.rule.to_string(),
            remote_port,
            local_port: options.local_port.unwrap_or(remote_port),
            owner: owner(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// Starts the intercept; on any failure, or when `interrupted` completes first (Ctrl-C
    /// during set-up), undoes what it did before returning the error.
    pub async fn start(
        client: kube::Client,
        options: InterceptOptions,
        mut progress: impl FnMut(Progress),
        interrupted: impl std::future::Future<Output = ()>,
    ) -> Result<Self, InterceptError> {
        let target = target::resolve(
            &client,
            &options.namespace,
            &options.service,
            options.remote_port,
        )
        .await?;
        progress(Progress::Checked {
            service: format!("{}/{}", options.namespace, options.service),
            port: target::describe_port(&target.port().port),
        });
        let names = SessionNames::new(&options.namespace, &options.service);
        let record = Self::new_record(&names, &target, &options);
        let result = tokio::select! {
            result = Self::set_up(&client, &names, &target, &record, &options, &mut progress) => result,
            () = interrupted => Err(InterceptError::Interrupted),
        };
        match result {
            Ok(tunnel) => Ok(Self {
                client,
                names,
                record,
                tunnel,
            }),
            Err(error) => {
                let _ = clean_up(&client, &names, None, &mut |_| {}).await;
                Err(error)
            }
        }
    }

    async fn set_up(
        client: &kube::Client,
        names: &SessionNames,
        target: &Target,
        record: &Record,
        options: &InterceptOptions,
        progress: &mut impl FnMut(Progress),
    ) -> Result<Tunnel, InterceptError> {
        let namespace = &names.namespace;
        let owner = owner_reference(&target.service);
        let ca = SessionCa::generate()?;
        let (proxy_identity, laptop_identity) = (ca.issue_proxy()?, ca.issue_client()?);
        drop(ca);
        let post = PostParams::default();
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&post, &secret::build(names, &proxy_identity, owner.clone()))
            .await?;
        progress(Progress::Created(format!("secret {}", names.secret())));
        let shadow = Api::<Service>::namespaced(client.clone(), namespace)
            .create(&post, &shadow_service::build(names, target, owner.clone()))
            .await?;
        let shadow_ip = shadow.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        progress(Progress::Created(format!(
            "shadow service {} ({shadow_ip})",
            names.shadow()
        )));
        let spec = proxy_deployment::ProxySpec {
            target,
            shadow_ip: &shadow_ip,
            header: &record.header,
            image: &options.proxy_image,
            image_pull_secret: options.image_pull_secret.as_deref(),
        };
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
        deployments
            .create(&post, &proxy_deployment::build(names, &spec, owner))
            .await?;
        progress(Progress::Created(format!(
            "proxy deployment {} ({})",
            names.proxy(),
            options.proxy_image
        )));
        progress(Progress::WaitingForProxy);
        let started = std::time::Instant::now();
        let pod_ip = wait_ready(client, names, options.timeout).await?;
        progress(Progress::ProxyReady(started.elapsed()));

        let services = Api::<Service>::namespaced(client.clone(), namespace);
        selector::switch(&services, &target.service, record).await?;
        progress(Progress::Switched);

        let (tunnel_port, _) = proxy_deployment::proxy_ports(target);
        let config = TunnelConfig {
            proxy: options
                .tunnel_endpoint
                .clone()
                .unwrap_or_else(|| format!("{pod_ip}:{tunnel_port}")),
            identity: laptop_identity,
            local_app: SocketAddr::from((Ipv4Addr::LOCALHOST, record.local_port)),
        };
        // Without an explicit endpoint, each reconnect dials the session's ready proxy pod, so
        // a replaced pod (new IP) is found again.
        let resolver = options
            .tunnel_endpoint
            .is_none()
            .then(|| proxy_resolver(client, names, tunnel_port));
        let tunnel = Tunnel::start_with_resolver(config, resolver)
            .map_err(|error| InterceptError::Tunnel(Arc::new(error)))?;
        let proxy = tunnel.connected().await.map_err(InterceptError::Tunnel)?;
        progress(Progress::TunnelConnected(proxy));
        Ok(tunnel)
    }

    /// The tunnel, for its events.
    pub fn tunnel(&self) -> &Tunnel {
        &self.tunnel
    }

    /// What was recorded on the Service.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Restores the Service first (so new connections go to the original pods), then removes
    /// the proxy and, once it has drained, the shadow Service and the Secret, and closes the
    /// tunnel: intercepted requests in flight at the stop complete.
    pub async fn stop(self, mut progress: impl FnMut(Progress)) -> Result<(), InterceptError> {
        let result = clean_up(&self.client, &self.names, Some(&self.tunnel), &mut progress).await;
        self.tunnel.close().await;
        result
    }
}

/// What `--dry-run` prints.
pub struct Plan {
    /// The Secret (key material elided).
    pub secret: Secret,
    /// The shadow Service.
    pub shadow: Service,
    /// The proxy Deployment.
    pub deployment: Deployment,
    /// What the Service's annotation would record (the selector switch).
    pub record: Record,
}

/// Finds the IP of the session's ready proxy pod.
async fn ready_proxy_ip(
    pods: &Api<Pod>,
    names: &SessionNames,
) -> Result<(Option<String>, Vec<Pod>), kube::Error> {
    let selector = names
        .proxy_selector()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let ready = list.items.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then(|| status.pod_ip.clone()).flatten()
    });
    Ok((ready, list.items))
}

/// The tunnel's resolver: the session's ready proxy pod, at `tunnel_port`.
fn proxy_resolver(
    client: &kube::Client,
    names: &SessionNames,
    tunnel_port: u16,
) -> crate::ProxyResolver {
    let pods = Api::<Pod>::namespaced(client.clone(), &names.namespace);
    let names = names.clone();
    Arc::new(move || {
        let (pods, names) = (pods.clone(), names.clone());
        Box::pin(async move {
            match ready_proxy_ip(&pods, &names).await {
                Ok((Some(ip), _)) => format!("{ip}:{tunnel_port}")
                    .parse()
                    .map_err(|e| format!("{e}")),
                Ok((None, _)) => Err(format!("no ready proxy pod for session {} yet", names.id)),
                Err(error) => Err(format!("could not look up the proxy pod: {error}")),
            }
        })
    })
}

/// Waits until the session's proxy pod is ready; returns its IP. On timeout, the error says why
/// from the pod's status and events.
async fn wait_ready(
    client: &kube::Client,
    names: &SessionNames,
    timeout: Duration,
) -> Result<String, InterceptError> {
    let pods = Api::<Pod>::namespaced(client.clone(), &names.namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (ready, items) = ready_proxy_ip(&pods, names).await?;
        if let Some(ip) = ready {
            return Ok(ip);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(InterceptError::ProxyNotReady {
                timeout,
                reason: why_not_ready(client, names, &items).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn why_not_ready(client: &kube::Client, names: &SessionNames, pods: &[Pod]) -> String {
    let Some(pod) = pods.first() else {
        return "no proxy pod was created (check the Deployment's events)".into();
    };
    let mut reasons = Vec::new();
    for status in pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
    {
        if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            reasons.push(format!(
                "{}: {}",
                waiting.reason.as_deref().unwrap_or("waiting"),
                waiting.message.as_deref().unwrap_or_default()
            ));
        }
        if let Some(terminated) = status.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            reasons.push(format!(
                "container exited with code {}",
                terminated.exit_code
            ));
        }
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let events = Api::<Event>::namespaced(client.clone(), &names.namespace);
    if let Ok(list) = events.list(&ListParams::default()).await {
        reasons.extend(
            list.items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(pod_name.as_str()))
                .map(|e| {
                    format!(
                        "event {}: {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                }),
        );
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "pod {pod_name} is not ready (its readiness probe on /readyz fails)"
        ));
    }
    reasons.join("; ")
}

/// Undoes a session: restores the Service's selector (if it is still the proxy's), then deletes
/// the proxy Deployment, waits until the draining proxy ends `tunnel` (its in-flight requests
/// answered; at most [`DRAIN_TIMEOUT`]), and deletes the shadow Service and Secret. Idempotent.
pub(crate) async fn clean_up(
    client: &kube::Client,
    names: &SessionNames,
    tunnel: Option<&Tunnel>,
    progress: &mut impl FnMut(Progress),
) -> Result<(), InterceptError> {
    let services = Api::<Service>::namespaced(client.clone(), &names.namespace);
    match selector::restore(&services, &names.service, Some(&names.id)).await? {
        Restored::Selector => {
            progress(Progress::Restored);
            // Connections still routed to the proxy meanwhile are served, not refused.
            tokio::time::sleep(ENDPOINT_PROPAGATION).await;
        }
        Restored::LeftAsChanged(selector) => {
            progress(Progress::LeftAsChanged(format!("{selector:?}")))
        }
        Restored::Nothing => {}
    }
    let delete = DeleteParams::background();
    if Api::<Deployment>::namespaced(client.clone(), &names.namespace)
        .delete(&names.proxy(), &delete)
        .await
        .is_ok()
    {
        progress(Progress::Deleted(format!(
            "proxy deployment {}",
            names.proxy()
        )));
    }
    if let Some(tunnel) = tunnel {
        tunnel.closed_by_proxy(DRAIN_TIMEOUT).await;
    }
    if services.delete(&names.shadow(), &delete).await.is_ok() {
        progress(Progress::Deleted(format!(
            "shadow service {}",
            names.shadow()
        )));
    }
    if Api::<Secret>::namespaced(client.clone(), &names.namespace)
        .delete(&names.secret(), &delete)
        .await
        .is_ok()
    {
        progress(Progress::Deleted(format!("secret {}", names.secret())));
    }
    Ok(())
}
