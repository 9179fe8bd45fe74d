//! An intercept, start to finish: check the Service, make the session's certificates, create the
//! shadow Service, the Secret (owned by the shadow Service) and the proxy Deployment, wait until
//! the proxy is ready, switch the Service's selector, connect the tunnel — and undo it all in
//! reverse, on request or on failure.
//! This module only orders the steps; each lives in [`crate::k8s`].

mod error;
mod options;
mod owner;
mod set_up;

use cz_shared::tls::SessionCa;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub use error::{InterceptError, Rollback, SetUpError};
pub use options::{InterceptOptions, Plan, TunnelMode};

use crate::k8s::cleanup::{self, CleanupError};
use crate::k8s::names::SessionNames;
use crate::k8s::owned::{self, ObjectRef};
use crate::k8s::record::Record;
use crate::k8s::target::{self, Target};
use crate::k8s::{owner_reference, proxy_deployment, secret, shadow_service};
use crate::progress::Progress;
use crate::Tunnel;
use set_up::SetUp;

/// How long [`Intercept::stop`] lets in-flight intercepted requests finish before it closes the
/// tunnel (the proxy pod's termination grace period).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A running intercept.
pub struct Intercept {
    client: kube::Client,
    names: SessionNames,
    record: Record,
    created: Vec<ObjectRef>,
    tunnel: Tunnel,
}

impl Intercept {
    /// The Service and port that would be intercepted, and what would be created: for
    /// `--dry-run`. Changes nothing.
    pub async fn plan(
        client: &kube::Client,
        options: &InterceptOptions,
    ) -> Result<Plan, InterceptError> {
        let target = resolve(client, options).await?;
        let names = SessionNames::generate(&options.namespace, &options.service)?;
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
        let deployment = proxy_deployment::build(&names, &spec, owner);
        let identity = SessionCa::generate()
            .and_then(|ca| ca.issue_proxy())
            .map_err(InterceptError::Certificates)?;
        // The Secret is owned by the shadow Service, whose uid exists only once it is created.
        let shadow_owner = OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Service".to_owned(),
            name: names.shadow(),
            uid: "<uid of the shadow service>".to_owned(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        };
        let mut secret = secret::build(&names, &identity, Some(shadow_owner));
        secret.data = secret.data.map(|data| {
            data.into_keys()
                .map(|k| (k, k8s_openapi::ByteString(b"<generated>".to_vec())))
                .collect()
        });
        Ok(Plan {
            secret,
            shadow,
            deployment,
            record: new_record(&names, &target, options),
        })
    }

    /// Starts the intercept; on any failure, or when `interrupted` completes first (Ctrl-C
    /// during set-up), undoes what it did before returning the error, which says how far
    /// undoing got.
    pub async fn start(
        client: kube::Client,
        options: InterceptOptions,
        mut progress: impl FnMut(Progress),
        interrupted: impl std::future::Future<Output = ()>,
    ) -> Result<Self, InterceptError> {
        let target = resolve(&client, &options).await?;
        progress(Progress::Checked {
            service: format!("{}/{}", options.namespace, options.service),
            port: target::describe_port(&target.port().port),
        });
        let names = SessionNames::generate(&options.namespace, &options.service)?;
        let record = new_record(&names, &target, &options);
        let mut created = Vec::new();
        let set_up = SetUp {
            client: &client,
            names: &names,
            target: &target,
            record: &record,
            options: &options,
        };
        let result = tokio::select! {
            result = set_up.run(&mut created, &mut progress) => result,
            () = interrupted => Err(SetUpError::Interrupted),
        };
        match result {
            Ok(tunnel) => Ok(Self {
                client,
                names,
                record,
                created,
                tunnel,
            }),
            Err(cause) => {
                let rollback = roll_back(&client, &names, &target, created, &mut progress).await;
                Err(InterceptError::NotStarted {
                    service: format!("{}/{}", names.namespace, names.service),
                    cause,
                    rollback,
                })
            }
        }
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
    /// the proxy and, once it has drained (its in-flight intercepted requests answered through
    /// the tunnel; at most [`DRAIN_TIMEOUT`]), the shadow Service (the cluster's garbage collector
    /// deletes the Secret it owns), and closes the tunnel. The error lists whatever could not be
    /// removed.
    pub async fn stop(self, mut progress: impl FnMut(Progress)) -> Result<(), InterceptError> {
        let drained = async {
            self.tunnel.closed_by_proxy(DRAIN_TIMEOUT).await;
        };
        let result = cleanup::clean_up(
            &self.client,
            &self.names,
            &self.created,
            drained,
            &mut progress,
        )
        .await;
        self.tunnel.close().await;
        result.map(drop).map_err(InterceptError::from)
    }
}

async fn resolve(
    client: &kube::Client,
    options: &InterceptOptions,
) -> Result<Target, InterceptError> {
    Ok(target::resolve(
        client,
        &options.namespace,
        &options.service,
        options.remote_port,
    )
    .await?)
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
        owner: owner::owner(),
        since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Undoes a failed set-up: what it recorded as created, plus anything verifiably the session's
/// whose creation was cut short before its answer arrived (an interrupt).
async fn roll_back(
    client: &kube::Client,
    names: &SessionNames,
    target: &Target,
    mut created: Vec<ObjectRef>,
    progress: &mut impl FnMut(Progress),
) -> Rollback {
    let lookup = match target.service.metadata.uid.as_deref() {
        Some(uid) => owned::find(client, names, uid).await,
        None => Ok(Vec::new()),
    };
    for object in lookup.iter().flatten() {
        if !created.contains(object) {
            created.push(object.clone());
        }
    }
    match (
        cleanup::clean_up(client, names, &created, std::future::ready(()), progress).await,
        lookup,
    ) {
        (Err(error), _) => Rollback::Incomplete(error),
        (Ok(_), Err(source)) => Rollback::Incomplete(CleanupError::Unverified {
            session: names.id.clone(),
            namespace: names.namespace.clone(),
            source,
        }),
        (Ok(_), Ok(_)) => Rollback::Complete,
    }
}
