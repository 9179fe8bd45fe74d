//! The session Secret: the proxy's certificate and key and the session CA certificate, mounted
//! into the proxy. The CA's key never leaves the laptop.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;

use super::names::SessionNames;
use cz_shared::tls::{Identity, CA_CERT_FILE, CERT_FILE, KEY_FILE};

/// The Secret holding `proxy`'s identity.
pub(crate) fn build(
    names: &SessionNames,
    proxy: &Identity,
    owner: Option<OwnerReference>,
) -> Secret {
    Secret {
        metadata: names.metadata(names.secret(), owner),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            [
                (CERT_FILE, proxy.cert_pem.as_bytes()),
                (KEY_FILE, proxy.key_pem().as_bytes()),
                (CA_CERT_FILE, proxy.ca_cert_pem.as_bytes()),
            ]
            .into_iter()
            .map(|(file, pem)| (file.to_owned(), ByteString(pem.to_vec())))
            .collect(),
        ),
        ..Default::default()
    }
}
