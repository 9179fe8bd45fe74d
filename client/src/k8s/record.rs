//! The record of an intercept, kept in an annotation on the intercepted Service: enough to
//! restore the Service exactly, to find the session's objects again, and to tell others who
//! intercepts it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::INTERCEPT_ANNOTATION;

/// What the annotation records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Session id.
    pub session: String,
    /// The selector before the intercept.
    pub original_selector: BTreeMap<String, String>,
    /// The selector during the intercept (the proxy's pods).
    pub proxy_selector: BTreeMap<String, String>,
    /// The intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The intercepted Service port.
    pub remote_port: u16,
    /// The laptop port requests go to.
    pub local_port: u16,
    /// Who intercepts (user@host).
    pub owner: String,
    /// When the intercept started (RFC 3339).
    pub since: String,
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
}
