//! TLS for https checks: rustls with the ring provider, the host's CA store when verifying, and
//! a verifier that accepts any certificate (but still checks the handshake signatures) when the
//! check is `insecure`.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::ProbeError;

/// The TLS server name: the host (without a port) if given, else the backend address.
pub(crate) fn server_name(
    host: Option<&str>,
    target: IpAddr,
) -> Result<ServerName<'static>, ProbeError> {
    let Some(host) = host else {
        return Ok(ServerName::IpAddress(target.into()));
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or_default(),
        None => host,
    };
    ServerName::try_from(name.to_owned())
        .map_err(|_| ProbeError::Invalid(format!("TLS server name {host:?}")))
}

pub(super) async fn handshake(
    stream: TcpStream,
    target: IpAddr,
    host: Option<&str>,
    insecure: bool,
) -> Result<TlsStream<TcpStream>, ProbeError> {
    let name = server_name(host, target)?;
    let config = config(insecure)?;
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| super::http::read_error("tls handshake", &e))
}

/// The client configuration, built once per mode. Building fails only if rustls' ring provider
/// supported no safe protocol version; then every https probe says so.
fn config(insecure: bool) -> Result<Arc<ClientConfig>, ProbeError> {
    static VERIFYING: OnceLock<Result<Arc<ClientConfig>, ProbeError>> = OnceLock::new();
    static INSECURE: OnceLock<Result<Arc<ClientConfig>, ProbeError>> = OnceLock::new();
    let cell = if insecure { &INSECURE } else { &VERIFYING };
    cell.get_or_init(|| {
        build(insecure)
            .map(Arc::new)
            .map_err(|e| ProbeError::Tls(e.to_string()))
    })
    .clone()
}

fn build(insecure: bool) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(
        added,
        ignored,
        errors = found.errors.len(),
        "loaded the host's CA store"
    );
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any certificate chain and name; handshake signatures are still verified, so the
/// peer at least holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let name = |h| server_name(h, ip).map(|n| n.to_str().into_owned());
        assert_eq!(name(None), Ok("10.0.0.1".into()));
        assert_eq!(name(Some("a.example:8443")), Ok("a.example".into()));
        assert_eq!(name(Some("[::1]:443")), Ok("::1".into()));
        assert!(name(Some("bad name")).is_err());
    }
}
