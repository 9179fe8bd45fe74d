//! An intercept, start to finish: check the Service, make the session's certificates, create the
//! shadow Service, the Secret (owned by the shadow Service) and the proxy Deployment, wait until
//! the proxy is ready, switch the Service's selector, connect the tunnel — and undo it all in
//! reverse, on request or on failure.
//! This module only orders the steps; each lives in [`crate::k8s`].

mod blueprint;
mod error;
mod options;
mod owner;
mod set_up;

use cz_shared::tls::SessionCa;

pub use error::{InterceptError, Rollback, SetUpError};
pub use options::{
    InterceptOptions, Plan, TunnelMode, SHADOW_IP_PLACEHOLDER, SHADOW_UID_PLACEHOLDER,
};

use crate::k8s::cleanup::{self, CleanupError};
use crate::k8s::names::SessionNames;
use crate::k8s::owned::{self, ObjectRef};
use crate::k8s::record::Record;
use crate::k8s::secret;
use crate::k8s::target::{self, Target};
use crate::progress::Progress;
use crate::Tunnel;
use blueprint::Blueprint;
use set_up::SetUp;

/// How long [`Intercept::stop`] lets the deleted proxy drain (its shutdown delay, then its
/// in-flight intercepted requests) before it closes the tunnel: the proxy pod's termination grace
/// period.
pub const DRAIN_TIMEOUT: std::time::Duration = crate::k8s::proxy_deployment::TERMINATION_GRACE;

/// A running intercept.
pub struct Intercept {
    client: kube::Client,
    names: SessionNames,
    record: Record,
    created: Vec<ObjectRef>,
    tunnel: Tunnel,
}

impl Intercept {
    /// What [`Self::start`] would create and change, for `--dry-run` (see [`Plan`]): the
    /// Service is checked as `start` checks it, and nothing is changed.
    pub async fn plan(
        client: &kube::Client,
        options: &InterceptOptions,
    ) -> Result<Plan, InterceptError> {
        let target = resolve(client, options).await?;
        let names = SessionNames::generate(&options.namespace, &options.service)?;
        let record = new_record(&names, &target, options);
        let blueprint = Blueprint::new(&names, &target, &record, options);
        let proxy = SessionCa::generate()
            .and_then(|ca| ca.issue_proxy())
            .map_err(InterceptError::Certificates)?;
        let shadow_service = blueprint.shadow_service();
        // The Secret's owner is the shadow Service, whose uid exists once it is created.
        let mut created_shadow = shadow_service.clone();
        created_shadow.metadata.uid = Some(SHADOW_UID_PLACEHOLDER.to_owned());
        Ok(Plan {
            secret: secret::elide(blueprint.secret(&proxy, &created_shadow)),
            shadow_service,
            proxy_deployment: blueprint.proxy_deployment(SHADOW_IP_PLACEHOLDER),
            switched_service: blueprint.switched_service(),
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
            blueprint: Blueprint::new(&names, &target, &record, &options),
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
