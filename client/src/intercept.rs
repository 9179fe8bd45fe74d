//! An intercept, start to finish: check the Service, make the session's certificates, create the
//! shadow Service, the Secret (owned by the shadow Service) and the proxy Deployment, wait until
//! the proxy is ready, switch the Service's selector, connect the tunnel — and undo it all in
//! reverse, on request or on failure.
//!
//! A Service another developer already intercepts on the same port is joined instead: the
//! session adds its own route (its rule, its CA) to the running proxy and connects its own
//! tunnel. Leaving detaches the route; the last session out restores the Service.
//! This module only orders the steps; each lives in [`crate::k8s`].

mod blueprint;
mod connect;
mod error;
mod join;
mod options;
mod owner;
mod plan;

pub(crate) use owner::owner;
mod set_up;

pub use error::{InterceptError, Rollback, SetUpError};
pub use options::{InterceptOptions, TunnelMode};
pub use plan::{Creation, Joining, Plan, SHADOW_IP_PLACEHOLDER, SHADOW_UID_PLACEHOLDER};

use crate::k8s::cleanup::CleanupError;
use crate::k8s::leave::leave;
use crate::k8s::names::SessionNames;
use crate::k8s::owned::{self, ObjectRef};
use crate::k8s::record::{Leaving, Member, Record};
use crate::k8s::selector::{Restored, SelectorError};
use crate::k8s::target::{self, Target};
use crate::progress::Progress;
use crate::Tunnel;
use blueprint::Blueprint;
use join::JoinSteps;
use set_up::SetUp;

/// How long [`Intercept::stop`] lets the deleted proxy drain (its shutdown delay, then its
/// in-flight intercepted requests) before it closes the tunnel: the proxy pod's termination grace
/// period.
pub const DRAIN_TIMEOUT: std::time::Duration = crate::k8s::proxy_deployment::TERMINATION_GRACE;

/// What [`Intercept::stop`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Left {
    /// This was the last session: the Service is restored and the proxy removed.
    Ended,
    /// Other sessions stay on the intercept: only this session's route was detached.
    StillShared {
        /// How many sessions stay.
        others: usize,
    },
}

/// A running intercept: this session's route on the Service's proxy, which it created or
/// joined.
pub struct Intercept {
    client: kube::Client,
    /// This session's names.
    names: SessionNames,
    /// The session whose proxy serves the intercept (this one, unless it joined).
    proxy: SessionNames,
    record: Record,
    /// The objects this session created (none when it joined).
    created: Vec<ObjectRef>,
    tunnel: Tunnel,
}

impl Intercept {
    /// What [`Self::start`] would create and change, or what joining the intercept another
    /// session runs on the same port would change, for `--dry-run` (see [`Plan`]): the Service
    /// is checked as `start` checks it, and nothing is changed.
    pub async fn plan(
        client: &kube::Client,
        options: &InterceptOptions,
    ) -> Result<Plan, InterceptError> {
        plan::plan(client, options).await
    }

    /// Starts the intercept, or joins the one another developer's session runs on the same
    /// port; on any failure, or when `interrupted` completes first (Ctrl-C during set-up),
    /// undoes what it did before returning the error, which says how far undoing got.
    pub async fn start(
        client: kube::Client,
        options: InterceptOptions,
        mut progress: impl FnMut(Progress),
        interrupted: impl std::future::Future<Output = ()>,
    ) -> Result<Self, InterceptError> {
        let mut interrupted = std::pin::pin!(interrupted);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let target = resolve(&client, &options).await?;
            progress(Progress::Checked {
                service: format!("{}/{}", options.namespace, options.service),
                port: target::describe_port(&target.port().port),
            });
            let names = SessionNames::generate(&options.namespace, &options.service)?;
            let attempt = if Record::read(&target.service).is_some() {
                Self::join(
                    &client,
                    &options,
                    names.clone(),
                    &target,
                    &mut progress,
                    &mut interrupted,
                )
                .await
            } else {
                Self::create(
                    &client,
                    &options,
                    names.clone(),
                    &target,
                    &mut progress,
                    &mut interrupted,
                )
                .await
            };
            match attempt {
                Ok(intercept) => return Ok(intercept),
                // Two developers started at the same moment and the other one switched the
                // Service first (this one's objects are removed), or the intercept being joined
                // ended: start over, which joins theirs or starts anew.
                Err(InterceptError::NotStarted {
                    cause:
                        SetUpError::Switch(SelectorError::ChangedBeforeSwitch { .. })
                        | SetUpError::JoinedEnded,
                    rollback: Rollback::Complete,
                    ..
                }) if attempts < 3 => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Creates the proxy and switches the Service to it.
    async fn create(
        client: &kube::Client,
        options: &InterceptOptions,
        names: SessionNames,
        target: &Target,
        progress: &mut impl FnMut(Progress),
        interrupted: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Result<Self, InterceptError> {
        let record = new_record(&names, target, options);
        let mut created = Vec::new();
        let set_up = SetUp {
            client,
            names: &names,
            target,
            record: &record,
            options,
            blueprint: Blueprint::new(&names, target, &record, options),
        };
        let result = tokio::select! {
            result = set_up.run(&mut created, progress) => result,
            () = interrupted => Err(SetUpError::Interrupted),
        };
        match result {
            Ok(tunnel) => Ok(Self {
                client: client.clone(),
                proxy: names.clone(),
                names,
                record,
                created,
                tunnel,
            }),
            Err(cause) => {
                let rollback = roll_back(client, &names, target, created, progress).await;
                Err(InterceptError::NotStarted {
                    service: format!("{}/{}", names.namespace, names.service),
                    cause,
                    rollback,
                })
            }
        }
    }

    /// Joins the intercept another session runs on the Service.
    async fn join(
        client: &kube::Client,
        options: &InterceptOptions,
        names: SessionNames,
        target: &Target,
        progress: &mut impl FnMut(Progress),
        interrupted: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Result<Self, InterceptError> {
        let member = new_member(&names, target, options);
        let steps = JoinSteps {
            client,
            names: &names,
            target,
            options,
            member: &member,
        };
        let mut joined = None;
        let result = tokio::select! {
            result = steps.run(&mut joined, progress) => result,
            () = interrupted => Err(SetUpError::Interrupted),
        };
        let cause = match result {
            Ok((tunnel, record)) => {
                return Ok(Self {
                    client: client.clone(),
                    proxy: joined.expect("a joined session knows its proxy"),
                    names,
                    record,
                    created: Vec::new(),
                    tunnel,
                })
            }
            Err(cause) => cause,
        };
        let rollback = match joined {
            None => Rollback::Complete,
            Some(proxy) => {
                let leaving = Leaving::Session(names.id.clone());
                let ready = std::future::ready(());
                match leave(client, &proxy, &leaving, &[], ready, progress).await {
                    Ok(_) => Rollback::Complete,
                    Err(error) => Rollback::Incomplete(error),
                }
            }
        };
        Err(InterceptError::NotStarted {
            service: format!("{}/{}", names.namespace, names.service),
            cause,
            rollback,
        })
    }

    /// The tunnel, for its events.
    pub fn tunnel(&self) -> &Tunnel {
        &self.tunnel
    }

    /// What was recorded on the Service.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Leaves the intercept. While other sessions stay on it, this session's route is detached
    /// (its matching requests go to the original pods) and the proxy closes the tunnel once this
    /// session's requests in flight are answered (at most [`DRAIN_TIMEOUT`]). The last session
    /// out restores the Service first (so new connections go to the original pods), then removes
    /// the proxy and, once it has drained (its in-flight intercepted requests answered through
    /// the tunnel; at most [`DRAIN_TIMEOUT`]), the shadow Service (the cluster's garbage
    /// collector deletes the Secret it owns), and closes the tunnel. The error lists whatever
    /// could not be removed.
    pub async fn stop(self, mut progress: impl FnMut(Progress)) -> Result<Left, InterceptError> {
        let drained = async {
            self.tunnel.closed_by_proxy(DRAIN_TIMEOUT).await;
        };
        let leaving = Leaving::Session(self.names.id.clone());
        let result = leave(
            &self.client,
            &self.proxy,
            &leaving,
            &self.created,
            drained,
            &mut progress,
        )
        .await;
        let left = match result {
            Ok(cleaned) => match cleaned.restored {
                Restored::StillShared(others) => {
                    self.tunnel.closed_by_proxy(DRAIN_TIMEOUT).await;
                    Ok(Left::StillShared {
                        others: others.len(),
                    })
                }
                _ => Ok(Left::Ended),
            },
            Err(error) => Err(InterceptError::from(error)),
        };
        self.tunnel.close().await;
        left
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

fn new_member(names: &SessionNames, target: &Target, options: &InterceptOptions) -> Member {
    let remote_port = target.port().port.port as u16;
    Member {
        session: names.id.clone(),
        header: options.rule.to_string(),
        local_port: options.local_port.unwrap_or(remote_port),
        owner: owner::owner(),
        since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        orphan_after_seconds: options.orphan_after.as_secs(),
    }
}

fn new_record(names: &SessionNames, target: &Target, options: &InterceptOptions) -> Record {
    let remote_port = target.port().port.port as u16;
    let member = new_member(names, target, options);
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
        owner: member.owner.clone(),
        since: member.since.clone(),
        members: vec![member],
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
    // Someone may have joined once the Service was switched: then only this session leaves.
    let leaving = Leaving::Session(names.id.clone());
    match (
        leave(
            client,
            names,
            &leaving,
            &created,
            std::future::ready(()),
            progress,
        )
        .await,
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
