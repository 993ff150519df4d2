//! TLS both ways, with rustls and the `ring` provider.
//!
//! * Outbound: every HTTP client a service builds ([`http_client`]) trusts the system's roots
//!   (`/etc/ssl/certs` in the images) plus the PEM files of `--ca-file` (a private CA); the
//!   OTLP span exporter uses the same roots and also `OTEL_EXPORTER_OTLP_CERTIFICATE`.
//! * Inbound: with `--tls-cert` and `--tls-key` a service serves HTTPS instead of HTTP (for
//!   deployments without a mesh or an ingress that terminates TLS). The pair is read again
//!   when either file changes (a renewed Kubernetes Secret or cert-manager certificate), a
//!   bad pair is logged and the last good one kept; handshakes run off the accept path, each
//!   within the header timeout, so a client that stalls in one holds only its own slot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::RwLock;

/// How often the certificate files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Outbound TLS flags, the same for every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM file of CA certificates trusted for outbound HTTPS (the store, an OTLP collector,
    /// AgentOps, vLLM) besides the system's; repeatable
    #[arg(long = "ca-file", env = "AGL_CA_FILE", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Clients built elsewhere (tests, libraries) find it as the process default; an
        // error only means one is installed already.
        let _ = CryptoProvider::install_default(Arc::clone(&provider).as_ref().clone());
        provider
    }))
}

static OUTBOUND: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
/// The `--ca-file`s behind [`OUTBOUND`], for configurations that add one of their own.
static OUTBOUND_FILES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Sets the roots outbound clients trust from the flags; call once at start, before the
/// first client is built (later calls keep the first configuration).
pub fn configure_outbound(args: &ClientTlsArgs) -> anyhow::Result<()> {
    let config = client_config(&args.ca_files)?;
    let _ = OUTBOUND_FILES.set(args.ca_files.clone());
    let _ = OUTBOUND.set(config);
    Ok(())
}

/// A client configuration trusting the system's roots and `ca_files`.
pub fn client_config(ca_files: &[PathBuf]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "a system certificate could not be read");
    }
    let (_, unusable) = roots.add_parsable_certificates(native.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system certificates rustls cannot use");
    }
    for file in ca_files {
        let certs = read_certs(file)?;
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("{}: not a usable CA certificate", file.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn outbound() -> Arc<rustls::ClientConfig> {
    Arc::clone(OUTBOUND.get_or_init(|| {
        client_config(&[]).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "no system roots: outbound https will fail");
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
    }))
}

/// A client builder for every outbound call of a service: http and https, with the roots
/// [`configure_outbound`] set.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured((*outbound()).clone())
}

/// The blocking counterpart, for the OTLP span exporter's thread; `extra_ca` adds the roots
/// of `OTEL_EXPORTER_OTLP_CERTIFICATE`.
pub fn blocking_http_client(extra_ca: Option<&Path>) -> anyhow::Result<reqwest::blocking::Client> {
    let config = match extra_ca {
        None => (*outbound()).clone(),
        Some(file) => {
            let mut files = OUTBOUND_FILES.get().cloned().unwrap_or_default();
            files.push(file.to_owned());
            (*client_config(&files)?).clone()
        }
    };
    // A blocking client owns a runtime, which must not be built (or dropped) on an async
    // worker thread: build it on a thread of its own.
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the otlp http client panicked"))?
    .context("failed to build the otlp http client")
}

/// A client configuration that trusts exactly the first certificate of `cert_file` (the
/// server's own, read from the file it serves): the `healthcheck` probe of a service
/// serving TLS, which reaches it as 127.0.0.1, a name its certificate need not carry.
pub fn pinned_client_config(cert_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pinned = read_certs(cert_file)?.swap_remove(0);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            cert: pinned,
            provider: provider(),
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts the one certificate it pins, with signatures checked as usual.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_certs(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read the certificate file {}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", file.display());
    Ok(certs)
}

/// Inbound TLS flags, the same for every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain: serve HTTPS on the service's port instead of HTTP (with
    /// `--tls-key`); re-read when the file changes
    #[arg(long, env = "AGL_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1); re-read when it changes
    #[arg(long, env = "AGL_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A server certificate that follows its files.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

struct Loaded {
    stamps: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The pair the flags name (`None`: plain HTTP); an unreadable or mismatched pair is an
    /// error at start.
    pub fn load(args: &ServerTlsArgs) -> anyhow::Result<Option<Arc<Self>>> {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Ok(None);
        };
        let stamps = stamps(cert, key);
        let certified = certified_key(cert, key)?;
        Ok(Some(Arc::new(Self {
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new(Loaded {
                stamps,
                key: certified,
            }),
        })))
    }

    /// The server configuration handshakes use (HTTP/2 and HTTP/1.1 offered by ALPN).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Reads the pair again if either file changed; keeps the old one when the new one is
    /// unusable (a Secret is often updated one file at a time). Whether it changed.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.cert, &self.key);
        if now == self.read().stamps {
            return false;
        }
        match certified_key(&self.cert, &self.key) {
            Ok(key) => {
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *current = Loaded { stamps: now, key };
                tracing::info!(cert = %self.cert.display(), "tls certificate reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "tls certificate changed but cannot be used; keeping the previous one"
                );
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_INTERVAL`] for as long as the runtime lives.
    pub fn watch(self: &Arc<Self>) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                let check = Arc::clone(&tls);
                let _ = tokio::task::spawn_blocking(move || check.reload_if_changed()).await;
            }
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().key))
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: no PEM private key", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, &provider())
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}
