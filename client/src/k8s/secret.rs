//! The session Secret: the proxy's certificate and key and the session CA certificate, mounted
//! into the proxy. The CA's key never leaves the laptop.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;

use super::names::SessionNames;
use cz_shared::tls::{Identity, CA_CERT_FILE, CERT_FILE, KEY_FILE};

/// Annotation on a Secret shown by `--dry-run`, saying why its data is empty.
pub(crate) const ELIDED_ANNOTATION: &str = "czctl.io/dry-run";

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

/// `secret` as `--dry-run` shows it: every data key kept with an empty value (still a valid
/// Secret), and [`ELIDED_ANNOTATION`] saying the values are generated when the intercept starts.
pub(crate) fn elide(mut secret: Secret) -> Secret {
    let keys: Vec<String> = secret
        .data
        .take()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            ELIDED_ANNOTATION.to_owned(),
            format!(
                "{} elided: a new session CA and the proxy's certificate and key are generated on the laptop when the intercept starts (the CA key never leaves it)",
                keys.join(", ")
            ),
        );
    secret.data = Some(
        keys.into_iter()
            .map(|key| (key, ByteString(Vec::new())))
            .collect(),
    );
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use cz_shared::tls::SessionCa;

    #[test]
    fn elided_secret_keeps_its_keys_and_no_material() {
        let names = SessionNames::generate("demo", "echo").expect("randomness");
        let identity = SessionCa::generate()
            .and_then(|ca| ca.issue_proxy())
            .expect("certificates");
        let shown = elide(build(&names, &identity, None));
        let data = shown.data.as_ref().expect("data");
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            [CA_CERT_FILE, CERT_FILE, KEY_FILE]
        );
        assert!(data.values().all(|value| value.0.is_empty()));
        assert!(
            shown.metadata.annotations.expect("annotations")[ELIDED_ANNOTATION]
                .contains("generated")
        );
    }
}
