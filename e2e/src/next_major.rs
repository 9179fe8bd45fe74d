//! Peers of the next major version of the tunnel protocol, as a newer czctl or cz-proxy would
//! be: they offer their own ALPN and the hello-only fallback, and say hello with a higher major
//! version. Built from a session identity with rustls directly, since `cz_shared` only makes
//! configurations of the current version.

use std::net::SocketAddr;
use std::sync::Arc;

use cz_shared::protocol::{Hello, ProtocolVersion, ALPN_HELLO_ONLY, PROTOCOL_VERSION, SERVER_NAME};
use cz_shared::stream::read_hello;
use cz_shared::tls::Identity;
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tokio::sync::mpsc;

/// The software version the next-major peers announce.
pub const NEXT_SOFTWARE: &str = "9.0.0";

/// The hello of a peer one major version ahead.
pub fn next_hello() -> Hello {
    Hello {
        protocol: ProtocolVersion {
            major: PROTOCOL_VERSION.major + 1,
            minor: 0,
        },
        software: NEXT_SOFTWARE.to_owned(),
    }
}

fn alpn() -> Vec<Vec<u8>> {
    let own = format!("cz-tunnel/{}", PROTOCOL_VERSION.major + 1);
    vec![own.into_bytes(), ALPN_HELLO_ONLY.to_vec()]
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain_key_roots(
    identity: &Identity,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Arc<RootCertStore>,
) {
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem().as_bytes()).expect("key");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(identity.ca_cert_pem.as_bytes()) {
        roots.add(cert.expect("CA certificate")).expect("root");
    }
    (chain, key, Arc::new(roots))
}

/// The ALPN a connection settled on.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Vec<u8> {
    connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .unwrap_or_default()
}

/// A proxy of the next major version, on 127.0.0.1; stops when dropped.
pub struct NextProxy {
    /// Its tunnel address.
    pub addr: SocketAddr,
    /// For each laptop that said hello: the ALPN it got and its hello.
    pub hellos_rx: mpsc::Receiver<(Vec<u8>, Hello)>,
    endpoint: quinn::Endpoint,
}

impl Drop for NextProxy {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"");
    }
}

impl NextProxy {
    /// Starts it with the session's proxy identity: laptops of the session are let in, hear its
    /// hello, and are expected to hang up.
    pub fn spawn(identity: &Identity) -> Self {
        let (chain, key, roots) = chain_key_roots(identity);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .expect("verifier");
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server certificate");
        tls.alpn_protocols = alpn();
        let config = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(tls).expect("QUIC"),
        ));
        let endpoint =
            quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = endpoint.local_addr().expect("addr");
        let (hellos_tx, hellos_rx) = mpsc::channel(16);
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let hellos_tx = hellos_tx.clone();
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                        return;
                    };
                    let Ok(laptop) = read_hello(&mut recv).await else {
                        return;
                    };
                    let _ = send.write_all(&next_hello().encode()).await;
                    let _ = send.finish();
                    let _ = hellos_tx.send((negotiated_alpn(&connection), laptop)).await;
                    connection.closed().await;
                });
            }
        });
        Self {
            addr,
            hellos_rx,
            endpoint,
        }
    }
}

/// A laptop of the next major version, connected to `proxy` with the session's laptop identity,
/// after the hello exchange: returns the connection and the proxy's hello.
pub async fn next_laptop(proxy: SocketAddr, identity: &Identity) -> (quinn::Connection, Hello) {
    let (chain, key, roots) = chain_key_roots(identity);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    tls.alpn_protocols = alpn();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("QUIC")));
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let connection = endpoint
        .connect_with(config, proxy, SERVER_NAME)
        .expect("connect")
        .await
        .expect("the proxy lets a laptop of its session in, whatever its version");
    let (mut send, mut recv) = connection.open_bi().await.expect("control stream");
    send.write_all(&next_hello().encode()).await.expect("hello");
    let _ = send.finish();
    let hello = read_hello(&mut recv).await.expect("the proxy's hello");
    (connection, hello)
}
