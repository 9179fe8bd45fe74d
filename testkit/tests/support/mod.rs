//! What the testkit's integration tests share.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

/// Creates the Secret `proxy-tls` in `namespace`, holding a cz-proxy's certificates (what its
/// `--tls-dir` volume mounts).
pub async fn proxy_secret(client: &Client, namespace: &str) {
    let identity = cz_shared::tls::SessionCa::generate()
        .and_then(|ca| ca.issue_proxy())
        .expect("certificates");
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "proxy-tls"},
        "data": {
            "tls.crt": encode(&identity.cert_pem),
            "tls.key": encode(identity.key_pem()),
            "ca.crt": encode(&identity.ca_cert_pem),
        },
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("created");
}
