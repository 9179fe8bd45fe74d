//! Joining an intercept another developer's session started on the same port: the session is
//! recorded on the Service beside the others, registers its rule and CA with the running proxy
//! over the control channel, and connects its own tunnel to that proxy. Nothing is created, the
//! Service's selector is not touched and the proxy does not restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cz_shared::control::{Join, Routes, CONTROL_VERSION};
use cz_shared::tls::SessionCa;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use tokio::sync::Mutex;

use super::connect::{connect_within, BeforeDial, Dial};
use super::{InterceptOptions, SetUpError};
use crate::k8s::names::SessionNames;
use crate::k8s::proxy_control;
use crate::k8s::record::{Member, Record};
use crate::k8s::selector::{self, Joined};
use crate::k8s::target::Target;
use crate::progress::Progress;
use crate::tunnel::{CarrierRefused, ResolveError};
use crate::Tunnel;

/// The steps of joining, in order.
pub(super) struct JoinSteps<'a> {
    pub(super) client: &'a kube::Client,
    /// This session's names.
    pub(super) names: &'a SessionNames,
    pub(super) target: &'a Target,
    pub(super) options: &'a InterceptOptions,
    /// This session, as it is recorded.
    pub(super) member: &'a Member,
}

impl JoinSteps<'_> {
    /// Joins; `joined` is set to the proxy's session once this session is recorded on the
    /// Service, from when a failure must be undone by leaving.
    pub(super) async fn run(
        &self,
        joined: &mut Option<SessionNames>,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(Tunnel, Record), SetUpError> {
        let (client, names, options) = (self.client, self.names, self.options);
        let ca = SessionCa::generate().map_err(SetUpError::Certificates)?;
        let laptop = ca.issue_client().map_err(SetUpError::Certificates)?;
        let services = Api::<Service>::namespaced(client.clone(), &names.namespace);
        let record =
            match selector::join(&services, &names.namespace, &names.service, self.member).await? {
                Joined::Recorded(record) => record,
                Joined::RuleTaken(holder) => {
                    return Err(SetUpError::RuleTaken {
                        namespace: names.namespace.clone(),
                        name: names.service.clone(),
                        holder: Box::new(holder),
                    })
                }
                Joined::NotIntercepted => return Err(SetUpError::JoinedEnded),
            };
        let proxy =
            SessionNames::existing(&names.namespace, &names.service, record.session.clone());
        *joined = Some(proxy.clone());

        let join = Join {
            version: CONTROL_VERSION,
            header: self.member.header.clone(),
            client_ca: ca.certificate_pem().to_owned(),
            orphan_after_seconds: options.orphan_after.as_secs(),
        };
        let routes = proxy_control::join(client, &proxy, &names.id, &join)
            .await
            .map_err(SetUpError::Join)?;
        let others = record
            .members()
            .iter()
            .filter(|member| member.session != names.id)
            .map(Member::describe)
            .collect();
        progress(Progress::Joined { others });

        let dial = Dial {
            client,
            proxy: &proxy,
            target: self.target,
            options,
            before_dial: Some(rejoin(client, &proxy, &names.id, join)),
        };
        let identity = laptop.trusting(routes.proxy_ca);
        let tunnel = dial.start(identity, self.member.local_port, proxy.proxy())?;
        let connected = connect_within(&tunnel, options.timeout).await?;
        progress(Progress::TunnelConnected(connected));
        Ok((tunnel, record))
    }
}

/// How long a registration on a pod counts as fresh: the carriers a reconnect dials at once
/// share one.
const REJOINED_RECENTLY: Duration = Duration::from_secs(2);

/// Registers the session's route again before every reconnect: a replaced proxy pod starts
/// with its creator's route only. A session no longer recorded on the Service (closed by
/// `czctl session close`) is not registered again: the tunnel gives up instead.
fn rejoin(client: &kube::Client, proxy: &SessionNames, session: &str, join: Join) -> BeforeDial {
    let (client, proxy, session, join) = (
        client.clone(),
        proxy.clone(),
        session.to_owned(),
        Arc::new(join),
    );
    let rejoined: Arc<Mutex<Option<(String, Instant)>>> = Arc::default();
    Arc::new(move |pod: String| {
        let (client, proxy, session, join) =
            (client.clone(), proxy.clone(), session.clone(), join.clone());
        let rejoined = rejoined.clone();
        Box::pin(async move {
            // Direct UDP and the port-forward are dialled at once: one registration for both,
            // so that neither waits for a second one.
            let mut rejoined = rejoined.lock().await;
            let fresh =
                |(on, at): &(String, Instant)| on == &pod && at.elapsed() < REJOINED_RECENTLY;
            if rejoined.as_ref().is_some_and(fresh) {
                return Ok(());
            }
            if !recorded_sessions(&client, &proxy).await?.contains(&session) {
                return Err(CarrierRefused(
                    format!(
                        "session {session} was closed: it is no longer recorded on the service"
                    )
                    .into(),
                )
                .into());
            }
            let routes =
                proxy_control::join_on(&client, &proxy, Some(&pod), &session, &join).await?;
            forget_departed(&client, &proxy, &pod, routes).await?;
            *rejoined = Some((pod, Instant::now()));
            Ok(())
        })
    })
}

/// The sessions recorded on the intercepted Service.
async fn recorded_sessions(
    client: &kube::Client,
    proxy: &SessionNames,
) -> Result<Vec<String>, kube::Error> {
    let services = Api::<Service>::namespaced(client.clone(), &proxy.namespace);
    let record = services
        .get_opt(&proxy.service)
        .await?
        .and_then(|service| Record::read(&service));
    let members = record.iter().flat_map(Record::members);
    Ok(members.map(|member| member.session).collect())
}

/// Detaches, on the proxy pod `pod`, the routes of `routes` whose sessions have left: a replaced
/// pod starts with its creator's route, even when the creator left before. The Service is read
/// after the routes, and a session is recorded before its route is added and detached before
/// it is unrecorded, so a route missing from the record is one whose session has left.
async fn forget_departed(
    client: &kube::Client,
    proxy: &SessionNames,
    pod: &str,
    routes: Routes,
) -> Result<(), ResolveError> {
    let recorded = recorded_sessions(client, proxy).await?;
    for route in routes.routes {
        if !recorded.contains(&route.session) {
            tracing::info!(session = %route.session, %pod, "detaching the route of a session that left");
            proxy_control::leave(client, proxy, Some(pod), &route.session).await?;
        }
    }
    Ok(())
}
