//! A client's security settings (Kafka's names) and what they turn into on the wire: TLS on the
//! channel (rustls through tonic's `tls-ring`) and the credentials sent with every request.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `security.protocol` | `PLAINTEXT` | `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` (credentials, no TLS), `SASL_SSL` (both) |
//! | `ssl.ca.location` | none | PEM file of the CA(s) that signed the brokers' certificates; required with `SSL`/`SASL_SSL` (no system trust store is built in) |
//! | `ssl.certificate.location` | none | PEM certificate presented to the broker (mutual TLS; the broker's principal is `User:<subject CN>`) |
//! | `ssl.key.location` | none | PEM private key of that certificate (both or neither) |
//! | `sasl.mechanism` | `PLAIN` | `PLAIN` or `SCRAM-SHA-256`; both send the username and password with every request (meant for `SASL_SSL`), checked by the broker against its SCRAM-SHA-256 credentials |
//! | `sasl.username`, `sasl.password` | none | required with `SASL_*` |
//!
//! **Wire form:** the credentials travel as the binary gRPC metadata `sasl-username-bin` and
//! `sasl-password-bin` (UTF-8, base64 on the wire by gRPC's rules), added to every request by
//! [`AuthInterceptor`]; the values are built once per client, so a request clones two `Bytes`.
//! Certificates and keys are read when the client is created ([`SecurityConfig::connector`]),
//! so a bad file is an INVALID_CONFIG naming the key, never a connection error later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{BinaryMetadataValue, MetadataMap};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result, error_chain};
use crate::limits::{SASL_PASSWORD_BYTES_MAX, SASL_USERNAME_BYTES_MAX, SSL_PEM_FILE_BYTES_MAX};

/// The metadata key carrying the username (binary, so any UTF-8 name crosses).
pub const USERNAME_METADATA_KEY: &str = "sasl-username-bin";
/// The metadata key carrying the password.
pub const PASSWORD_METADATA_KEY: &str = "sasl-password-bin";

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's names, in any case.
    pub fn from_name(v: &str) -> Option<SecurityProtocol> {
        match v.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether requests carry a username and password.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Kafka's `sasl.mechanism`. Both send the password (over TLS with `SASL_SSL`); the broker checks
/// it against a SCRAM-SHA-256 credential either way. `SCRAM-SHA-256` is accepted so that Kafka
/// client configurations work unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    #[default]
    Plain,
    ScramSha256,
}

impl SaslMechanism {
    pub fn from_name(v: &str) -> Option<SaslMechanism> {
        match v.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// The security keys of a client (and of a broker calling other brokers).
#[derive(Clone, Default)]
pub struct SecurityConfig {
    pub protocol: SecurityProtocol,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub sasl_mechanism: SaslMechanism,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
}

impl std::fmt::Debug for SecurityConfig {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("protocol", &self.protocol)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password.as_ref().map(|_| "***"))
            .finish()
    }
}

pub(crate) const SECURITY_KEYS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
];

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn path(v: &str) -> Option<PathBuf> {
    let v = v.trim();
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn read_pem(key: &str, p: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(p)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
    if meta.len() > SSL_PEM_FILE_BYTES_MAX {
        return Err(invalid(
            key,
            format!(
                "{} is larger than {SSL_PEM_FILE_BYTES_MAX} bytes; is it a PEM file?",
                p.display()
            ),
        ));
    }
    let bytes =
        std::fs::read(p).map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(invalid(
            key,
            format!("{} is not a PEM file (no -----BEGIN line)", p.display()),
        ));
    }
    Ok(bytes)
}

impl SecurityConfig {
    /// Sets one security key; `Ok(false)` when `key` is not one.
    pub(crate) fn set(&mut self, key: &str, v: &str) -> Result<bool> {
        match key {
            "security.protocol" => {
                self.protocol = SecurityProtocol::from_name(v).ok_or_else(|| {
                    invalid(
                        key,
                        format!(
                            "{:?} is not allowed; allowed: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
                            v.trim()
                        ),
                    )
                })?
            }
            "ssl.ca.location" => self.ssl_ca_location = path(v),
            "ssl.certificate.location" => self.ssl_certificate_location = path(v),
            "ssl.key.location" => self.ssl_key_location = path(v),
            "sasl.mechanism" => {
                self.sasl_mechanism = SaslMechanism::from_name(v).ok_or_else(|| {
                    invalid(
                        key,
                        format!(
                            "{:?} is not allowed; allowed: PLAIN, SCRAM-SHA-256",
                            v.trim()
                        ),
                    )
                })?
            }
            "sasl.username" => self.sasl_username = Some(v.to_owned()),
            "sasl.password" => self.sasl_password = Some(v.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the combination (files are read by [`SecurityConfig::connector`]).
    pub fn validate(&self) -> Result<()> {
        let p = self.protocol.name();
        if self.protocol.uses_tls() {
            if self.ssl_ca_location.is_none() {
                return Err(invalid(
                    "ssl.ca.location",
                    format!(
                        "is required with security.protocol={p}: the PEM file of the CA that \
                         signed the brokers' certificates (no system trust store is built in)"
                    ),
                ));
            }
            if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
                return Err(invalid(
                    if self.ssl_key_location.is_none() {
                        "ssl.key.location"
                    } else {
                        "ssl.certificate.location"
                    },
                    "ssl.certificate.location and ssl.key.location go together (mutual TLS)",
                ));
            }
        } else {
            for (key, v) in [
                ("ssl.ca.location", &self.ssl_ca_location),
                ("ssl.certificate.location", &self.ssl_certificate_location),
                ("ssl.key.location", &self.ssl_key_location),
            ] {
                if v.is_some() {
                    return Err(invalid(
                        key,
                        format!(
                            "is set but security.protocol={p} does not use TLS; use SSL or SASL_SSL"
                        ),
                    ));
                }
            }
        }
        if self.protocol.uses_sasl() {
            let user = self.sasl_username.as_deref().unwrap_or("");
            if user.is_empty() {
                return Err(invalid(
                    "sasl.username",
                    format!("is required with security.protocol={p}"),
                ));
            }
            if user.len() > SASL_USERNAME_BYTES_MAX {
                return Err(invalid(
                    "sasl.username",
                    format!("is longer than {SASL_USERNAME_BYTES_MAX} bytes"),
                ));
            }
            let password = self.sasl_password.as_deref().unwrap_or("");
            if password.is_empty() {
                return Err(invalid(
                    "sasl.password",
                    format!("is required with security.protocol={p}"),
                ));
            }
            if password.len() > SASL_PASSWORD_BYTES_MAX {
                return Err(invalid(
                    "sasl.password",
                    format!("is longer than {SASL_PASSWORD_BYTES_MAX} bytes"),
                ));
            }
        } else {
            for (key, set) in [
                ("sasl.username", self.sasl_username.is_some()),
                ("sasl.password", self.sasl_password.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        format!(
                            "is set but security.protocol={p} sends no credentials; use \
                             SASL_SSL or SASL_PLAINTEXT"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Validates and reads the certificate files: what every channel of a client is made with.
    pub fn connector(&self) -> Result<Connector> {
        self.validate()?;
        let tls = if self.protocol.uses_tls() {
            let mut tls = ClientTlsConfig::new();
            if let Some(p) = &self.ssl_ca_location {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem("ssl.ca.location", p)?));
            }
            if let (Some(c), Some(k)) = (&self.ssl_certificate_location, &self.ssl_key_location) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("ssl.certificate.location", c)?,
                    read_pem("ssl.key.location", k)?,
                ));
            }
            // Parses the PEM files now (tonic parses them when an endpoint takes the
            // configuration), so bad contents are reported when the client is made.
            Endpoint::from_static("https://localhost:1")
                .tls_config(tls.clone())
                .map_err(|e| {
                    invalid(
                        "ssl.ca.location",
                        format!("the TLS files cannot be used: {}", error_chain(&e)),
                    )
                })?;
            Some(tls)
        } else {
            None
        };
        let auth = match (&self.sasl_username, &self.sasl_password) {
            (Some(u), Some(p)) if self.protocol.uses_sasl() => Some(Credentials {
                username: BinaryMetadataValue::from_bytes(u.as_bytes()),
                password: BinaryMetadataValue::from_bytes(p.as_bytes()),
            }),
            _ => None,
        };
        Ok(Connector {
            protocol: self.protocol,
            tls,
            auth: AuthInterceptor { credentials: auth },
        })
    }
}

#[derive(Clone)]
struct Credentials {
    username: BinaryMetadataValue,
    password: BinaryMetadataValue,
}

/// Adds the client's credentials (if any) to every request's metadata.
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInterceptor")
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

impl AuthInterceptor {
    /// Adds the credentials to `metadata`.
    pub fn add_to(&self, metadata: &mut MetadataMap) {
        if let Some(c) = &self.credentials {
            metadata.insert_bin(USERNAME_METADATA_KEY, c.username.clone());
            metadata.insert_bin(PASSWORD_METADATA_KEY, c.password.clone());
        }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        self.add_to(request.metadata_mut());
        Ok(request)
    }
}

/// A channel to a broker with the client's credentials on every request.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthInterceptor>;

/// Makes endpoints (scheme, TLS) and carries the credentials interceptor; built once per client.
#[derive(Clone)]
pub struct Connector {
    protocol: SecurityProtocol,
    tls: Option<ClientTlsConfig>,
    auth: AuthInterceptor,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("protocol", &self.protocol)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Default for Connector {
    /// Plaintext, no credentials.
    fn default() -> Connector {
        Connector {
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            auth: AuthInterceptor::default(),
        }
    }
}

impl Connector {
    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    /// An endpoint for `address` (`HOST:PORT`): `https` with the TLS settings, else `http`.
    /// `key` names the setting the address came from, for the error.
    pub fn endpoint(
        &self,
        key: &str,
        address: &str,
        connect_timeout: Duration,
    ) -> Result<Endpoint> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut e = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| invalid(key, format!("{address:?}: {e}")))?
            .connect_timeout(connect_timeout);
        if let Some(tls) = &self.tls {
            e = e.tls_config(tls.clone()).map_err(|e| {
                invalid(
                    "ssl.ca.location",
                    format!("the TLS files cannot be used: {}", error_chain(&e)),
                )
            })?;
        }
        Ok(e)
    }

    /// `channel` with the credentials added to every request.
    pub fn intercept(&self, channel: tonic::transport::Channel) -> AuthChannel {
        tonic::service::interceptor::InterceptedService::new(channel, self.auth.clone())
    }

    /// Adds the credentials to one request's metadata (for code that holds a plain channel).
    pub fn authenticate<T>(&self, request: &mut tonic::Request<T>) {
        self.auth.add_to(request.metadata_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<SecurityConfig> {
        let mut c = SecurityConfig::default();
        for (k, v) in pairs {
            assert!(c.set(k, v)?);
        }
        c.validate()?;
        Ok(c)
    }

    fn key_of(r: Result<SecurityConfig>) -> String {
        match r {
            Err(Error::InvalidConfig { key, .. }) => key,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn protocols_and_their_requirements() {
        assert_eq!(cfg(&[]).unwrap().protocol, SecurityProtocol::Plaintext);
        assert_eq!(
            key_of(cfg(&[("security.protocol", "TLS")])),
            "security.protocol"
        );
        assert_eq!(
            key_of(cfg(&[("security.protocol", "ssl")])),
            "ssl.ca.location"
        );
        assert_eq!(
            key_of(cfg(&[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", "/ca.pem"),
                ("ssl.certificate.location", "/c.pem"),
            ])),
            "ssl.key.location"
        );
        assert_eq!(
            key_of(cfg(&[("ssl.ca.location", "/ca.pem")])),
            "ssl.ca.location"
        );
        assert_eq!(
            key_of(cfg(&[("security.protocol", "SASL_PLAINTEXT")])),
            "sasl.username"
        );
        assert_eq!(
            key_of(cfg(&[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.username", "alice")
            ])),
            "sasl.password"
        );
        assert_eq!(key_of(cfg(&[("sasl.username", "alice")])), "sasl.username");
        assert_eq!(
            key_of(cfg(&[("sasl.mechanism", "GSSAPI")])),
            "sasl.mechanism"
        );
        let c = cfg(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "alice"),
            ("sasl.password", "secret"),
        ])
        .unwrap();
        assert_eq!(c.sasl_mechanism, SaslMechanism::ScramSha256);
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn unreadable_certificate_files_name_the_key() {
        let c = cfg(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ])
        .unwrap();
        match c.connector() {
            Err(Error::InvalidConfig { key, reason }) => {
                assert_eq!(key, "ssl.ca.location");
                assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
