//! The record of an intercept, kept in an annotation on the intercepted Service: enough to
//! restore the Service exactly, to find the intercept's objects again, and to tell others who
//! intercepts it — every developer whose session shares the intercept's proxy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::INTERCEPT_ANNOTATION;

/// What the annotation records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The session that created the proxy, the shadow Service and the Secret (their names
    /// carry its id); it may have left since, while others still use them.
    pub session: String,
    /// The selector before the intercept.
    pub original_selector: BTreeMap<String, String>,
    /// The selector during the intercept (the proxy's pods).
    pub proxy_selector: BTreeMap<String, String>,
    /// The creating session's intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The intercepted Service port.
    pub remote_port: u16,
    /// The laptop port of the creating session's requests.
    pub local_port: u16,
    /// Who created the intercept (user@host).
    pub owner: String,
    /// When the intercept started (RFC 3339).
    pub since: String,
    /// Every session present, in the order they joined. Records of czctl before teams shared
    /// proxies have none: there the creating session is the one member ([`Record::members`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

/// One developer's session on an intercept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Session id.
    pub session: String,
    /// Its intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The laptop port its requests go to.
    pub local_port: u16,
    /// Who (user@host).
    pub owner: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// How long its matching requests wait for its laptop to come back before they go to the
    /// original pods, in seconds.
    #[serde(default)]
    pub orphan_after_seconds: u64,
}

impl Member {
    /// `OWNER (HEADER)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.owner, self.header)
    }
}

impl Record {
    /// The record on `service`, if it is intercepted.
    pub fn read(service: &Service) -> Option<Self> {
        let text = service
            .metadata
            .annotations
            .as_ref()?
            .get(INTERCEPT_ANNOTATION)?;
        serde_json::from_str(text).ok()
    }

    /// The sessions present on the intercept.
    pub fn members(&self) -> Vec<Member> {
        if !self.members.is_empty() {
            return self.members.clone();
        }
        vec![Member {
            session: self.session.clone(),
            header: self.header.clone(),
            local_port: self.local_port,
            owner: self.owner.clone(),
            since: self.since.clone(),
            orphan_after_seconds: 0,
        }]
    }

    /// The member holding a rule equal to `rule`, if any.
    pub fn holder_of(&self, rule: &cz_shared::InterceptRule) -> Option<Member> {
        self.members()
            .into_iter()
            .find(|member| member.header.parse().ok().as_ref() == Some(rule))
    }

    /// The record with `member` added last.
    pub(crate) fn with_member(&self, member: Member) -> Self {
        let mut record = self.clone();
        record.members = self.members();
        record.members.push(member);
        record
    }

    /// The record without the sessions `leaving` names; `None` when nobody would be left.
    pub(crate) fn without(&self, leaving: &Leaving) -> Option<Self> {
        let members: Vec<Member> = self
            .members()
            .into_iter()
            .filter(|member| !leaving.includes(&member.session))
            .collect();
        (!members.is_empty()).then(|| Self {
            members,
            ..self.clone()
        })
    }
}

/// Which sessions leave an intercept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaving {
    /// Every session: the intercept ends.
    All,
    /// This session; the others stay.
    Session(String),
}

impl Leaving {
    /// Whether `session` is one of those leaving.
    pub fn includes(&self, session: &str) -> bool {
        match self {
            Self::All => true,
            Self::Session(leaving) => leaving == session,
        }
    }
}
