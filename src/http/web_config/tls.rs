//! TLS: the rustls server configuration built from `tls_server_config`, and the handshake.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::reload::Files;
use rustls::{
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};

use super::schema::{ClientAuth, FieldError, RawTls, TlsVersion, fail, given};

/// What a client speaking plain HTTP to the TLS port is told (as Go's server does).
const PLAIN_HTTP_TO_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
Client sent an HTTP request to an HTTPS server.\n";

const TLS13_SUITE_NAMES: &[&str] =
    &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

const T: &str = "tls_server_config";

/// The TLS acceptor `tls_server_config` describes; `None` when it configures no TLS.
pub(super) fn build_tls(
    raw: &RawTls,
    files: &mut Files,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsAcceptor>, FieldError> {
    if !enabled(raw)? {
        return Ok(None);
    }
    if raw.client_allowed_sans.is_some() {
        return fail(format!("{T}.client_allowed_sans"), "not supported by this exporter");
    }
    let cert = pem(files, ("cert", &raw.cert), ("cert_file", &raw.cert_file), certificates)?;
    let Some((chain, _)) = cert else { return fail(format!("{T}.cert_file"), "required (or cert)") };
    let key = pem(files, ("key", &raw.key), ("key_file", &raw.key_file), private_key)?;
    let Some((key, key_field)) = key else { return fail(format!("{T}.key_file"), "required (or key)") };
    let client_cas = pem(files, ("client_ca", &raw.client_ca), ("client_ca_file", &raw.client_ca_file), roots)?;
    let versions = versions(raw, warnings)?;
    let provider = provider(raw)?;
    let verifier = verifier(raw, client_cas.map(|(roots, _)| roots), &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| (format!("{T}.cipher_suites"), format!("no cipher suite fits the TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| (key_field, format!("unusable with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Whether the section turns TLS on: a certificate, key or CA, or a client auth type. TLS
/// settings without any of them are a mistake, not a request for plain HTTP.
fn enabled(raw: &RawTls) -> Result<bool, FieldError> {
    let enabled = [&raw.cert, &raw.key, &raw.client_ca, &raw.cert_file, &raw.key_file, &raw.client_ca_file]
        .iter()
        .any(|v| given(v).is_some())
        || raw.client_auth_type.is_some();
    let other_settings = raw.min_version.is_some()
        || raw.max_version.is_some()
        || raw.cipher_suites.is_some()
        || raw.curve_preferences.is_some()
        || raw.prefer_server_cipher_suites.is_some();
    if !enabled && other_settings {
        return fail(format!("{T}.cert_file"), "required (or cert) when TLS settings are given");
    }
    Ok(enabled)
}

/// A PEM given inline or in a file (at most one of the two), parsed by `parse`; with the field
/// it came from. `None` when neither is given.
fn pem<V>(
    files: &mut Files,
    (inline_name, inline): (&str, &Option<String>),
    (file_name, file): (&str, &Option<String>),
    parse: impl Fn(&[u8], &str) -> Result<V, String>,
) -> Result<Option<(V, String)>, FieldError> {
    let (inline_field, file_field) = (format!("{T}.{inline_name}"), format!("{T}.{file_name}"));
    match (given(inline), given(file)) {
        (Some(_), Some(_)) => fail(inline_field, format!("give {inline_name} or {file_name}, not both")),
        (None, None) => Ok(None),
        (Some(text), None) => {
            let value = parse(text.as_bytes(), inline_name).map_err(|m| (inline_field.clone(), m))?;
            Ok(Some((value, inline_field)))
        }
        (None, Some(name)) => {
            let (path, bytes) = files.read(name).map_err(|m| (file_field.clone(), m))?;
            let value = parse(&bytes, &path.display().to_string()).map_err(|m| (file_field.clone(), m))?;
            Ok(Some((value, file_field)))
        }
    }
}

/// The protocol versions: rustls speaks TLS 1.2 and 1.3 only. A floor of 1.0 or 1.1 is raised
/// to 1.2 (the result is stricter than asked, never weaker); a ceiling below 1.2 cannot be
/// honoured.
fn versions(raw: &RawTls, warnings: &mut Vec<String>) -> Result<Vec<&'static SupportedProtocolVersion>, FieldError> {
    let mut min = raw.min_version.unwrap_or(TlsVersion::Tls12);
    let max = raw.max_version.unwrap_or(TlsVersion::Tls13);
    if max < TlsVersion::Tls12 {
        return fail(format!("{T}.max_version"), "TLS10 and TLS11 are not supported; use TLS12 or TLS13");
    }
    if min < TlsVersion::Tls12 {
        warnings.push(format!("{T}.min_version: TLS 1.0 and 1.1 are not supported; TLS 1.2 is the minimum"));
        min = TlsVersion::Tls12;
    }
    if min > max {
        return fail(format!("{T}.min_version"), "must not be above max_version");
    }
    Ok([(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect())
}

/// aws-lc-rs, with the cipher suites and key exchange groups the section restricts it to.
fn provider(raw: &RawTls) -> Result<Arc<rustls::crypto::CryptoProvider>, FieldError> {
    let mut provider = aws_lc_rs::default_provider();
    if let Some(names) = &raw.cipher_suites {
        provider.cipher_suites = cipher_suites(names, &provider.cipher_suites)?;
    }
    if let Some(names) = &raw.curve_preferences {
        provider.kx_groups = key_exchange_groups(names)?;
    }
    Ok(Arc::new(provider))
}

/// How client certificates are asked for and checked (`client_auth_type`, `client_ca`).
fn verifier(
    raw: &RawTls,
    client_cas: Option<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, FieldError> {
    let auth = raw.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
    Ok(match (auth, client_cas) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return fail(
                format!("{T}.client_auth_type"),
                "a client CA is configured but client_auth_type is NoClientCert; use RequireAndVerifyClientCert",
            );
        }
        (ClientAuth::NoClientCert, None) => Arc::new(NoClientAuth),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => Arc::new(AnyClientCert {
            mandatory: auth == ClientAuth::RequireAnyClientCert,
            algorithms: provider.signature_verification_algorithms,
        }),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return fail(
                format!("{T}.client_ca_file"),
                format!("required (or client_ca) with client_auth_type {auth:?}"),
            );
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, Some(roots)) => {
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let builder =
                if auth == ClientAuth::VerifyClientCertIfGiven { builder.allow_unauthenticated() } else { builder };
            builder.build().map_err(|e| (format!("{T}.client_ca_file"), format!("unusable client CA: {e}")))?
        }
    })
}

fn certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{source}: not a PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{source}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"));
    }
    Ok(chain)
}

fn private_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("{source}: no PEM private key found"),
        e => format!("{source}: not a PEM private key: {e}"),
    })
}

fn roots(pem: &[u8], source: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem, source)? {
        store.add(cert).map_err(|e| format!("{source}: unusable CA certificate: {e}"))?;
    }
    Ok(store)
}

/// The TLS 1.2 suites named, in the order given (the server's preference), plus every TLS 1.3
/// suite: like Go, `cipher_suites` restricts TLS 1.2 only.
fn cipher_suites(
    names: &[String],
    available: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, FieldError> {
    let mut chosen: Vec<SupportedCipherSuite> =
        available.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))).copied().collect();
    let tls12: Vec<&SupportedCipherSuite> =
        available.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).collect();
    for (i, name) in names.iter().enumerate() {
        if TLS13_SUITE_NAMES.contains(&name.as_str()) {
            continue;
        }
        match tls12.iter().find(|s| s.suite().as_str() == Some(name.as_str())) {
            Some(suite) if !chosen.contains(suite) => chosen.push(**suite),
            Some(_) => {}
            None => {
                let supported: Vec<&str> = tls12.iter().filter_map(|s| s.suite().as_str()).collect();
                return fail(
                    format!("tls_server_config.cipher_suites[{i}]"),
                    format!("unknown or unsupported cipher suite {name:?}; supported: {}", supported.join(", ")),
                );
            }
        }
    }
    Ok(chosen)
}

/// Go's curve names, in the order given.
fn key_exchange_groups(names: &[String]) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, FieldError> {
    let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let wanted = match name.as_str() {
            "CurveP256" => NamedGroup::secp256r1,
            "CurveP384" => NamedGroup::secp384r1,
            "X25519" => NamedGroup::X25519,
            "X25519MLKEM768" => NamedGroup::X25519MLKEM768,
            other => {
                return fail(
                    format!("tls_server_config.curve_preferences[{i}]"),
                    format!(
                        "unknown or unsupported curve {other:?}; supported: CurveP256, CurveP384, X25519, X25519MLKEM768"
                    ),
                );
            }
        };
        if let Some(group) = aws_lc_rs::ALL_KX_GROUPS.iter().find(|g| g.name() == wanted)
            && !groups.iter().any(|g| g.name() == wanted)
        {
            groups.push(*group);
        }
    }
    if groups.is_empty() {
        return fail("tls_server_config.curve_preferences", "at least one curve is required when the list is given");
    }
    Ok(groups)
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and, for
/// the latter, required) but its chain is not checked, as in Go. The toolkit calls these modes
/// insecure; `RequireAndVerifyClientCert` is the one to use. The handshake signature is still
/// verified, so the client at least holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS handshake of one connection, bounded by `limit`. A client that speaks plain HTTP is
/// told so in plain HTTP (400) instead of getting a TLS alert it cannot read.
pub async fn accept_tls(
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    limit: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
            stream.write_all(PLAIN_HTTP_TO_TLS).await?;
            let _ = stream.shutdown().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP request on the TLS port"));
        }
        acceptor.accept(stream).await
    };
    tokio::time::timeout(limit, handshake)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")))
}
