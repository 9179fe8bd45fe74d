//! Per-session certificates and the QUIC/TLS configuration of both tunnel ends.
//!
//! Each intercept session makes its own certificate authority on the laptop. It issues one
//! certificate to the proxy (which the laptop verifies) and one to the laptop (which the proxy
//! verifies): only the holder of the session's client key can attach to the tunnel. The CA's key
//! never leaves the laptop; the proxy receives its own certificate and key and the CA certificate,
//! as files of a mounted Secret.
//!
//! Certificates are valid from [`CLOCK_SKEW`] before they are issued (a cluster's clock may be
//! a little behind the laptop's) for [`SESSION_LIFETIME`]. They are not renewed: the proxy's
//! is in the session's Secret, which czctl does not rewrite; a session longer than that is
//! restarted (an established tunnel is unaffected, since only a new QUIC connection's
//! handshake checks validity, and the tunnel migrates its connection across carriers).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::protocol::{ALPN, ALPN_HELLO_ONLY, SERVER_NAME};

mod files;

use files::{private_dir, write_atomically};

/// File name of the session CA certificate in an identity directory (as in Kubernetes TLS Secrets).
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the holder's certificate in an identity directory.
pub const CERT_FILE: &str = "tls.crt";
/// File name of the holder's private key in an identity directory.
pub const KEY_FILE: &str = "tls.key";

/// How long a session's certificates are valid after they are issued: a month of uninterrupted
/// intercept, after which a new handshake (a new QUIC connection) fails and the session is
/// restarted. Bounded so that a key left behind by a crashed session expires.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How long before their issue certificates are already valid: the clock skew between the
/// laptop and the cluster that is tolerated.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why certificates could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or certificate failed.
    #[error("could not generate a session certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not hold what it should.
    #[error("could not read the {what}: {source}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificates or key.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("invalid session CA certificate: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The TLS configuration does not suit QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A session's certificate authority. Lives only on the laptop, for the length of the session.
pub struct SessionCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl SessionCa {
    /// Generates a new CA with a fresh key.
    pub fn generate() -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        set_validity(&mut params, SystemTime::now());
        params.distinguished_name = name("czctl session CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA certificate, PEM-encoded.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues the proxy's server certificate (for [`SERVER_NAME`]).
    pub fn issue_proxy(&self) -> Result<Identity, TlsError> {
        let params = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        self.issue(params, "cz-proxy", ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues the laptop's client certificate: it names no host, so it cannot pass for the
    /// proxy's.
    pub fn issue_client(&self) -> Result<Identity, TlsError> {
        let params = CertificateParams::new(Vec::new())?;
        self.issue(params, "czctl", ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Identity, TlsError> {
        set_validity(&mut params, SystemTime::now());
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            ca_cert_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: KeyPem(key.serialize_pem()),
        })
    }
}

/// Valid from [`CLOCK_SKEW`] before `now` for [`SESSION_LIFETIME`].
fn set_validity(params: &mut CertificateParams, now: SystemTime) {
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + SESSION_LIFETIME).into();
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// One tunnel end's credentials: its certificate and key, and the session CA it trusts.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The session CA's certificate, PEM-encoded.
    pub ca_cert_pem: String,
    /// This end's certificate, PEM-encoded.
    pub cert_pem: String,
    key_pem: KeyPem,
}

/// A private key, PEM-encoded; never printed.
#[derive(Clone)]
struct KeyPem(String);

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

impl Identity {
    /// This end's private key, PEM-encoded: for writing into a Kubernetes Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem.0
    }

    /// The same certificate and key, verifying the peer with the CA in `ca_cert_pem` instead of
    /// the one that issued it: a laptop joining another session's proxy trusts the proxy's CA,
    /// which the proxy serves on its control channel, while its own CA vouches for it.
    pub fn trusting(self, ca_cert_pem: String) -> Self {
        Self {
            ca_cert_pem,
            ..self
        }
    }

    /// Reads `ca.crt`, `tls.crt` and `tls.key` from a directory (such as a mounted Secret).
    pub fn from_dir(dir: &Path) -> io::Result<Self> {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("{}: {error}", dir.join(file).display()),
                )
            })
        };
        Ok(Self {
            ca_cert_pem: read(CA_CERT_FILE)?,
            cert_pem: read(CERT_FILE)?,
            key_pem: KeyPem(read(KEY_FILE)?),
        })
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`, which is created if missing and made
    /// accessible to its owner only (0700); a `dir` that is a symlink is refused. Each file is
    /// written whole under a new name and renamed into place, so a reader never sees half a file
    /// and a symlink in its place is replaced, never followed; the key is readable by its owner
    /// only (0600), whatever mode an earlier file had.
    pub fn write_to_dir(&self, dir: &Path) -> io::Result<()> {
        private_dir(dir)?;
        write_atomically(&dir.join(CA_CERT_FILE), self.ca_cert_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(KEY_FILE), self.key_pem.0.as_bytes(), 0o600)
    }

    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let pem = |what| move |source| TlsError::Pem { what, source };
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("certificate"))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.0.as_bytes()).map_err(pem("private key"))?;
        Ok((chain, key))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        roots(&self.ca_cert_pem)
    }

    /// The proxy's QUIC server configuration: presents this identity and accepts only client
    /// certificates issued by the session CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_with(transport_config())
    }

    /// [`server_config`](Self::server_config) on a carrier's own transport settings, such as
    /// [`stream_transport_config`](crate::carrier::stream_transport_config).
    pub fn server_config_with(
        &self,
        transport: quinn::TransportConfig,
    ) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_verifying(client_verifier(&self.ca_cert_pem)?, transport)
    }

    /// The laptop's QUIC client configuration: presents this identity and accepts only the
    /// session's proxy.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut transport = transport_config();
        // Keeps NAT bindings open and notices a dead proxy well within the idle timeout.
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        self.client_config_with(transport)
    }

    /// [`client_config`](Self::client_config) on a carrier's own transport settings, such as
    /// [`stream_transport_config`](crate::carrier::stream_transport_config) (whose keep-alive
    /// is kept).
    pub fn client_config_with(
        &self,
        mut transport: quinn::TransportConfig,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let tls = self.client_tls()?;
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        transport.max_concurrent_bidi_streams(MAX_CONCURRENT_REQUESTS.into());
        // The proxy's signals (signal::MAX_SIGNAL_LEN each), a few at a time.
        transport.max_concurrent_uni_streams(4u32.into());
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// [`server_config_with`](Self::server_config_with), accepting the client certificates
    /// `verifier` accepts instead of those of this identity's CA: a proxy serving several
    /// sessions accepts each session's laptop.
    pub fn server_config_verifying(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
        mut transport: quinn::TransportConfig,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let tls = self.server_tls(verifier)?;
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        // The laptop opens only the control stream; requests flow on streams the proxy opens.
        transport.max_concurrent_bidi_streams(4u32.into());
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// The TLS half of [`server_config`](Self::server_config).
    fn server_tls(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let (chain, key) = self.chain_and_key()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_HELLO_ONLY.to_vec()];
        tls.max_early_data_size = 0;
        Ok(tls)
    }

    /// The TLS half of [`client_config`](Self::client_config).
    fn client_tls(&self) -> Result<rustls::ClientConfig, TlsError> {
        let (chain, key) = self.chain_and_key()?;
        let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)?;
        tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_HELLO_ONLY.to_vec()];
        Ok(tls)
    }
}

/// The certificates in `ca_cert_pem`, as trust roots.
fn roots(ca_cert_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_cert_pem.as_bytes()) {
        roots.add(cert.map_err(|source| TlsError::Pem {
            what: "CA certificate",
            source,
        })?)?;
    }
    Ok(Arc::new(roots))
}

/// Accepts only client certificates issued by the CA in `ca_cert_pem` (one session's laptop).
pub fn client_verifier(ca_cert_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(
        WebPkiClientVerifier::builder_with_provider(roots(ca_cert_pem)?, crypto_provider())
            .build()?,
    )
}

/// How many request streams czctl lets the proxy open on one tunnel at once. cz-proxy's own
/// limit of requests in flight (`--tunnel-max-requests`) is lower by default, so a flood of
/// intercepted requests meets the proxy's limit, which it answers, before the laptop's.
pub const MAX_CONCURRENT_REQUESTS: u32 = 1024;

/// The one crypto provider of the workspace: ring, chosen explicitly rather than process-wide.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The tunnel's QUIC transport over UDP. Flow-control windows bound what one tunnel buffers:
/// 2 MiB per stream, 16 MiB per connection.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(crate::udp::MTU_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu_discovery));
    transport
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((2u32 * 1024 * 1024).into())
        .receive_window((16u32 * 1024 * 1024).into())
        .send_window(16 * 1024 * 1024)
        .max_idle_timeout(Some(
            Duration::from_secs(20)
                .try_into()
                .expect("20 s fits a VarInt"),
        ));
    transport
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ALPN a peer of a later major version would offer: its own, and the hello-only fallback.
    const NEXT_MAJOR: [&[u8]; 2] = [b"cz-tunnel/2", ALPN_HELLO_ONLY];

    fn quic_server(tls: rustls::ServerConfig) -> quinn::ServerConfig {
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).expect("QUIC")))
    }

    fn quic_client(tls: rustls::ClientConfig) -> quinn::ClientConfig {
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("QUIC")))
    }

    /// What each side of a QUIC handshake on loopback made of it: the server's view (the ALPN it
    /// chose, or why it refused) and whether the client accepted the server.
    async fn handshake(
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
    ) -> (Result<Vec<u8>, String>, Result<(), String>) {
        let server = quinn::Endpoint::server(server, ([127, 0, 0, 1], 0).into()).expect("server");
        let address = server.local_addr().expect("addr");
        let client_end = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client");
        let accepted = async {
            let incoming = server.accept().await.expect("an incoming connection");
            let connection = incoming.await.map_err(|e| e.to_string())?;
            let data = connection.handshake_data().expect("handshake data");
            let data = data
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .expect("rustls");
            Ok(data.protocol.unwrap_or_default())
        };
        let connected = async {
            let connecting = client_end
                .connect_with(client, address, SERVER_NAME)
                .expect("connect");
            connecting.await.map(drop).map_err(|e| e.to_string())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(accepted, connected)
        })
        .await
        .expect("the handshake finishes, one way or the other");
        server.close(0u32.into(), b"");
        client_end.close(0u32.into(), b"");
        outcome
    }

    #[tokio::test]
    async fn only_the_session_s_own_ends_complete_a_handshake() {
        let session = SessionCa::generate().expect("CA");
        let stranger = SessionCa::generate().expect("CA");
        let proxy = session.issue_proxy().expect("proxy");
        let laptop = session.issue_client().expect("laptop");

        let (server, client) = handshake(
            proxy.server_config().expect("server config"),
            laptop.client_config().expect("client config"),
        )
        .await;
        assert_eq!(server.expect("the proxy accepts its laptop"), ALPN);
        client.expect("the laptop accepts its proxy");

        // Another CA's client certificate, even one trusting this session's proxy.
        let mut intruder = stranger.issue_client().expect("intruder");
        intruder.ca_cert_pem = session.certificate_pem().to_owned();
        let (server, _) = handshake(
            proxy.server_config().expect("server config"),
            intruder.client_config().expect("client config"),
        )
        .await;
        server.expect_err("the proxy refuses a certificate its session did not issue");

        // Another CA's proxy, even one trusting this session's laptop.
        let mut impostor = stranger.issue_proxy().expect("impostor");
        impostor.ca_cert_pem = session.certificate_pem().to_owned();
        let (_, client) = handshake(
            impostor.server_config().expect("server config"),
            laptop.client_config().expect("client config"),
        )
        .await;
        client.expect_err("the laptop refuses a proxy its session did not issue");
    }

    #[tokio::test]
    async fn peers_of_another_major_version_meet_on_the_hello_only_alpn() {
        let session = SessionCa::generate().expect("CA");
        let proxy = session.issue_proxy().expect("proxy");
        let laptop = session.issue_client().expect("laptop");

        let mut next_laptop = laptop.client_tls().expect("tls");
        next_laptop.alpn_protocols = NEXT_MAJOR.map(<[u8]>::to_vec).to_vec();
        let (server, client) = handshake(
            proxy.server_config().expect("server config"),
            quic_client(next_laptop),
        )
        .await;
        assert_eq!(server.expect("a newer laptop is heard"), ALPN_HELLO_ONLY);
        client.expect("and accepts the proxy");

        let verifier = client_verifier(&proxy.ca_cert_pem).expect("verifier");
        let mut next_proxy = proxy.server_tls(verifier).expect("tls");
        next_proxy.alpn_protocols = NEXT_MAJOR.map(<[u8]>::to_vec).to_vec();
        let (server, client) = handshake(
            quic_server(next_proxy),
            laptop.client_config().expect("client config"),
        )
        .await;
        assert_eq!(server.expect("a newer proxy hears us"), ALPN_HELLO_ONLY);
        client.expect("and we accept it");
    }

    #[test]
    fn identity_round_trips_through_a_directory_and_hides_its_key() {
        let ca = SessionCa::generate().expect("CA");
        let identity = ca.issue_proxy().expect("identity");
        let dir = std::env::temp_dir().join(format!("cz-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        identity.write_to_dir(&dir).expect("write");
        let read = Identity::from_dir(&dir).expect("read");
        assert_eq!(read.cert_pem, identity.cert_pem);
        assert_eq!(read.key_pem(), identity.key_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert!(!format!("{read:?}").contains("PRIVATE KEY"));
    }

    /// A fresh directory under the system's temporary one, for one test.
    fn scratch_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cz-{test}-{}", std::process::id()));
        let _fresh = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What the laptop's verifier makes of the proxy's certificate, and the proxy's of the
    /// laptop's, at `at` (seconds since the epoch).
    fn verify_at(
        proxy: &Identity,
        laptop: &Identity,
        at: Duration,
    ) -> (Result<(), rustls::Error>, Result<(), rustls::Error>) {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let now = UnixTime::since_unix_epoch(at);
        let end_entity = |identity: &Identity| identity.chain_and_key().expect("chain").0.remove(0);
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            laptop.roots().expect("roots"),
            crypto_provider(),
        )
        .build()
        .expect("server verifier")
        .verify_server_cert(
            &end_entity(proxy),
            &[],
            &ServerName::try_from(SERVER_NAME).expect("name"),
            &[],
            now,
        )
        .map(drop);
        let client = WebPkiClientVerifier::builder_with_provider(
            proxy.roots().expect("roots"),
            crypto_provider(),
        )
        .build()
        .expect("client verifier")
        .verify_client_cert(&end_entity(laptop), &[], now)
        .map(drop);
        (server, client)
    }

    #[test]
    fn certificates_are_valid_from_a_few_minutes_before_issue_for_the_session() {
        let issued = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        let session = SessionCa::generate().expect("CA");
        let proxy = session.issue_proxy().expect("proxy");
        let laptop = session.issue_client().expect("laptop");
        let minute = Duration::from_secs(60);
        for (at, valid) in [
            (issued, true),
            (issued - CLOCK_SKEW + minute, true),
            (issued + SESSION_LIFETIME - minute, true),
            (issued - CLOCK_SKEW - minute, false),
            (issued - Duration::from_secs(365 * 24 * 3600), false),
            (issued + SESSION_LIFETIME + minute, false),
            (issued + Duration::from_secs(365 * 24 * 3600), false),
        ] {
            let (server, client) = verify_at(&proxy, &laptop, at);
            let offset = at.as_secs() as i64 - issued.as_secs() as i64;
            assert_eq!(server.is_ok(), valid, "proxy at {offset}s: {server:?}");
            assert_eq!(client.is_ok(), valid, "laptop at {offset}s: {client:?}");
        }
    }

    #[test]
    fn only_the_proxy_s_certificate_names_the_proxy() {
        let session = SessionCa::generate().expect("CA");
        let der = |identity: &Identity| identity.chain_and_key().expect("chain").0.remove(0);
        let names_proxy = |der: &[u8]| {
            der.windows(SERVER_NAME.len())
                .any(|w| w == SERVER_NAME.as_bytes())
        };
        let laptop = der(&session.issue_client().expect("laptop"));
        assert!(
            !names_proxy(&laptop),
            "the client certificate names {SERVER_NAME}"
        );
        let proxy = der(&session.issue_proxy().expect("proxy"));
        assert!(names_proxy(&proxy));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_written_whole_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| {
            std::fs::symlink_metadata(path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777
        };
        let identity = SessionCa::generate()
            .and_then(|ca| ca.issue_client())
            .expect("identity");

        // A missing directory is created private.
        let root = scratch_dir("private-keys");
        let dir = root.join("laptop");
        identity.write_to_dir(&dir).expect("write");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);

        // An open directory, a world-readable key and a symlink to a victim file: the directory
        // is closed, the key rewritten private, the victim untouched.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let victim = root.join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        std::fs::remove_file(dir.join(CERT_FILE)).expect("remove");
        std::os::unix::fs::symlink(&victim, dir.join(CERT_FILE)).expect("symlink");
        identity.write_to_dir(&dir).expect("rewrite");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert!(std::fs::symlink_metadata(dir.join(CERT_FILE))
            .expect("cert")
            .is_file());
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        let read = Identity::from_dir(&dir).expect("read");
        assert_eq!(read.key_pem(), identity.key_pem());
        assert_eq!(read.cert_pem, identity.cert_pem);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("UTF-8")
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [CA_CERT_FILE, CERT_FILE, KEY_FILE],
            "no temporary file left"
        );

        // A directory that is a symlink is refused, and nothing is written where it points.
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("dir");
        let linked = root.join("linked");
        std::os::unix::fs::symlink(&elsewhere, &linked).expect("symlink");
        let error = identity.write_to_dir(&linked).expect_err("a symlink");
        assert!(error.to_string().contains("symlink"), "{error}");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn missing_identity_file_names_the_path() {
        let error = Identity::from_dir(Path::new("/nonexistent/cz")).expect_err("missing");
        assert!(
            error.to_string().contains("/nonexistent/cz/ca.crt"),
            "{error}"
        );
    }
}
