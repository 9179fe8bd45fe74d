//! The API server's listener: HTTPS on 127.0.0.1 with a CA made at start-up, and the kubeconfig
//! that trusts it.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::api::Api;

/// The server's TLS material.
pub struct Tls {
    acceptor: TlsAcceptor,
    ca_pem: String,
}

impl Tls {
    /// A CA and a certificate for 127.0.0.1 and localhost.
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cz-testkit CA");
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem,
        })
    }

    /// A kubeconfig (JSON, which is YAML too) for a server at `address`, with `namespace` as the
    /// context's default.
    pub fn kubeconfig(&self, address: SocketAddr) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "cz-testkit", "preferences": {},
            "clusters": [{"name": "cz-testkit", "cluster": {"server": format!("https://{address}"), "certificate-authority-data": ca}}],
            "users": [{"name": "cz-testkit", "user": {"token": "cz-testkit"}}],
            "contexts": [{"name": "cz-testkit", "context": {"cluster": "cz-testkit", "user": "cz-testkit", "namespace": "default"}}],
        });
        serde_json::to_string_pretty(&config).expect("JSON")
    }
}

/// Serves the API until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<Tls>,
    api: Arc<Api>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok(accepted) => accepted, Err(_) => continue },
        };
        // As Go's net package does for every connection of a real API server.
        let _ = stream.set_nodelay(true);
        let (acceptor, api, shutdown) = (tls.acceptor.clone(), api.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(error) = result { debug!(%error, "API connection ended") },
                () = shutdown.cancelled() => {}
            }
        });
    }
}
