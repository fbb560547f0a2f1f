//! The broker's security: the listener's TLS (rustls through tonic), who a request comes from
//! (its [`Principal`]), and the settings brokers use to call each other.
//!
//! - **TLS**: `--security-protocol SSL|SASL_SSL` with `--ssl-certificate-location` and
//!   `--ssl-key-location`; `--ssl-ca-location` verifies client certificates (mutual TLS,
//!   `--ssl-client-auth` says whether one is required) and is the trust store for other brokers.
//!   A client that speaks plaintext to a TLS listener fails its handshake and is closed.
//! - **Principals** (Kafka's `KafkaPrincipal`): `User:<name>` — the SASL username when the
//!   listener authenticates with SASL, else the subject CN of a verified client certificate,
//!   else `User:ANONYMOUS`. The [`Authenticate`] interceptor computes it before any service
//!   method runs and puts it in the request's extensions.
//! - **Between brokers**: a broker's replica fetchers connect with the listener's protocol,
//!   present the broker's own certificate, trust `--ssl-ca-location` and send the inter-broker
//!   credentials ([`SecurityOptions::inter_broker_connector`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use sluiceway_core::acl::{AclOperation, ResourceType, authorize};
use sluiceway_core::client::security::{
    Connector, PASSWORD_METADATA_KEY, SecurityConfig, SecurityProtocol, USERNAME_METADATA_KEY,
};
use sluiceway_core::limits::{
    AUTH_CACHE_ENTRIES_MAX, CONNECTION_FIRST_BYTES_TIMEOUT_MS, SSL_PEM_FILE_BYTES_MAX,
};
use sluiceway_core::registry::Registry;
use sluiceway_core::scram::ScramCredential;
use sluiceway_core::{Error, ErrorCode, Result};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Kafka's `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients present no certificate.
    None,
    /// A certificate is verified when presented; clients without one connect as ANONYMOUS.
    Requested,
    /// Every client presents a certificate signed by `--ssl-ca-location`.
    Required,
}

/// The security settings as given (flag, environment or file), before validation.
#[derive(Debug, Default)]
pub struct SecuritySettings {
    pub protocol: Option<String>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_client_auth: Option<String>,
    pub inter_broker_username: Option<String>,
    pub inter_broker_password: Option<String>,
    pub authorizer: bool,
    pub allow_everyone_if_no_acl_found: bool,
    pub super_users: Option<String>,
}

/// The validated security settings of a broker.
#[derive(Clone)]
pub struct SecurityOptions {
    pub protocol: SecurityProtocol,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_ca_location: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub inter_broker_username: Option<String>,
    pub inter_broker_password: Option<String>,
    pub authorizer: bool,
    pub allow_everyone_if_no_acl_found: bool,
    /// `User:NAME` principals.
    pub super_users: Vec<String>,
}

impl std::fmt::Debug for SecurityOptions {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityOptions")
            .field("protocol", &self.protocol)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("client_auth", &self.client_auth)
            .field("inter_broker_username", &self.inter_broker_username)
            .field("authorizer", &self.authorizer)
            .field(
                "allow_everyone_if_no_acl_found",
                &self.allow_everyone_if_no_acl_found,
            )
            .field("super_users", &self.super_users)
            .finish()
    }
}

impl Default for SecurityOptions {
    /// Plaintext, no authentication, no authorizer: the zero-config broker.
    fn default() -> SecurityOptions {
        SecurityOptions {
            protocol: SecurityProtocol::Plaintext,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_ca_location: None,
            client_auth: ClientAuth::None,
            inter_broker_username: None,
            inter_broker_password: None,
            authorizer: false,
            allow_everyone_if_no_acl_found: false,
            super_users: Vec::new(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `User:a;User:b` (Kafka's `super.users`).
pub fn parse_principals(key: &str, v: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match p.strip_prefix("User:") {
            Some(name) if !name.is_empty() => out.push(p.to_owned()),
            _ => {
                return Err(invalid(
                    key,
                    format!("{p:?} is not a principal; write User:NAME (several separated by ;)"),
                ));
            }
        }
    }
    Ok(out)
}

fn read_pem(key: &str, p: &PathBuf) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(p)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))?;
    if meta.len() > SSL_PEM_FILE_BYTES_MAX {
        return Err(invalid(
            key,
            format!(
                "{} is larger than {SSL_PEM_FILE_BYTES_MAX} bytes",
                p.display()
            ),
        ));
    }
    std::fs::read(p).map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display())))
}

impl SecurityOptions {
    /// Validates the combination; certificate files are read by [`SecurityOptions::server_tls`].
    pub fn load(s: SecuritySettings) -> Result<SecurityOptions> {
        let protocol = match s.protocol.as_deref() {
            None => SecurityProtocol::Plaintext,
            Some(v) => SecurityProtocol::from_name(v).ok_or_else(|| {
                invalid(
                    "security_protocol",
                    format!(
                        "{v:?} is not allowed; allowed: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
                    ),
                )
            })?,
        };
        let p = protocol.name();
        if protocol.uses_tls() {
            for (key, v) in [
                ("ssl_certificate_location", &s.ssl_certificate_location),
                ("ssl_key_location", &s.ssl_key_location),
            ] {
                if v.is_none() {
                    return Err(invalid(
                        key,
                        format!("is required with security_protocol={p} (PEM file)"),
                    ));
                }
            }
        } else {
            for (key, v) in [
                ("ssl_certificate_location", &s.ssl_certificate_location),
                ("ssl_key_location", &s.ssl_key_location),
                ("ssl_ca_location", &s.ssl_ca_location),
            ] {
                if v.is_some() {
                    return Err(invalid(
                        key,
                        format!(
                            "is set but security_protocol={p} does not use TLS; use SSL or SASL_SSL"
                        ),
                    ));
                }
            }
        }
        let client_auth = match s.ssl_client_auth.as_deref() {
            None if s.ssl_ca_location.is_some() => ClientAuth::Required,
            None | Some("none") => ClientAuth::None,
            Some("requested") => ClientAuth::Requested,
            Some("required") => ClientAuth::Required,
            Some(other) => {
                return Err(invalid(
                    "ssl_client_auth",
                    format!("{other:?} is not allowed; allowed: none, requested, required"),
                ));
            }
        };
        if client_auth != ClientAuth::None && s.ssl_ca_location.is_none() {
            return Err(invalid(
                "ssl_client_auth",
                "verifying client certificates needs ssl_ca_location (the CA that signs them)",
            ));
        }
        if protocol.uses_sasl() {
            if s.inter_broker_username.as_deref().unwrap_or("").is_empty()
                || s.inter_broker_password.as_deref().unwrap_or("").is_empty()
            {
                return Err(invalid(
                    "inter_broker_username",
                    format!(
                        "is required with security_protocol={p}, with inter_broker_password: \
                         what this broker presents to other brokers (a super user on every broker)"
                    ),
                ));
            }
        } else if s.inter_broker_username.is_some() || s.inter_broker_password.is_some() {
            return Err(invalid(
                "inter_broker_username",
                format!("is set but security_protocol={p} sends no credentials"),
            ));
        }
        let super_users = match &s.super_users {
            Some(v) => parse_principals("super_users", v)?,
            None => Vec::new(),
        };
        let options = SecurityOptions {
            protocol,
            ssl_certificate_location: s.ssl_certificate_location,
            ssl_key_location: s.ssl_key_location,
            ssl_ca_location: s.ssl_ca_location,
            client_auth,
            inter_broker_username: s.inter_broker_username,
            inter_broker_password: s.inter_broker_password,
            authorizer: s.authorizer,
            allow_everyone_if_no_acl_found: s.allow_everyone_if_no_acl_found,
            super_users,
        };
        // Read the files now, so a bad path fails the start with the setting's name.
        options.server_tls()?;
        Ok(options)
    }

    /// The listener's TLS configuration, `None` for a plaintext listener.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.ssl_certificate_location, &self.ssl_key_location)
        else {
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read_pem("ssl_certificate_location", cert)?,
                read_pem("ssl_key_location", key)?,
            ))
            // A client that never finishes its handshake does not hold a connection slot.
            .timeout(Duration::from_millis(CONNECTION_FIRST_BYTES_TIMEOUT_MS));
        if let (Some(ca), true) = (&self.ssl_ca_location, self.client_auth != ClientAuth::None) {
            tls = tls
                .client_ca_root(Certificate::from_pem(read_pem("ssl_ca_location", ca)?))
                .client_auth_optional(self.client_auth == ClientAuth::Requested);
        }
        Ok(Some(tls))
    }

    /// How this broker calls other brokers: the listener's protocol, its own certificate, the
    /// CA as trust store, the inter-broker credentials.
    pub fn inter_broker_connector(&self) -> Result<Connector> {
        let tls = self.protocol.uses_tls();
        SecurityConfig {
            protocol: self.protocol,
            ssl_ca_location: self.ssl_ca_location.clone().filter(|_| tls),
            ssl_certificate_location: self.ssl_certificate_location.clone().filter(|_| tls),
            ssl_key_location: self.ssl_key_location.clone().filter(|_| tls),
            sasl_mechanism: Default::default(),
            sasl_username: self.inter_broker_username.clone(),
            sasl_password: self.inter_broker_password.clone(),
        }
        .connector()
        .map_err(|e| match e {
            Error::InvalidConfig { key, reason } => invalid(
                "inter-broker connection",
                format!("{key} {reason} (brokers call each other with the listener's settings: set ssl_ca_location to the CA of the brokers' certificates)"),
            ),
            other => other,
        })
    }

    /// Whether anything protects the listener (TLS or authentication).
    pub fn is_protected(&self) -> bool {
        self.protocol != SecurityProtocol::Plaintext
    }
}

/// Who sent a request, Kafka's `User:NAME`. Put in every request's extensions by
/// [`Authenticate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal(pub Arc<str>);

impl Principal {
    pub const ANONYMOUS: &'static str = "User:ANONYMOUS";

    pub fn user(name: &str) -> Principal {
        Principal(format!("User:{name}").into())
    }

    pub fn anonymous() -> Principal {
        Principal(Principal::ANONYMOUS.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The principal of a request (`User:ANONYMOUS` if the interceptor did not run, as in tests
/// that call the services directly).
pub fn principal_of<T>(request: &tonic::Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// One DER element: (tag, contents, the rest after it). `None` on anything malformed.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The first common name (OID 2.5.4.3) of an X.509 certificate's subject, from its DER bytes.
/// Only reads; the TLS layer has already verified the certificate.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(cert)? else {
        return None;
    };
    // version [0] (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.2;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = der(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (tag, mut rdn, next) = der(subject)?;
        subject = next;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attr, next) = der(rdn)?;
            rdn = next;
            if tag != SEQUENCE {
                return None;
            }
            let (0x06, oid, value) = der(attr)? else {
                return None;
            };
            if oid == OID_CN {
                let (tag, value, _) = der(value)?;
                // UTF8String, PrintableString, IA5String, T61String (Latin-1 in practice).
                return match tag {
                    0x0c | 0x13 | 0x16 => String::from_utf8(value.to_vec()).ok(),
                    0x14 => Some(value.iter().map(|b| *b as char).collect()),
                    _ => None,
                };
            }
        }
    }
    None
}

/// The principal of a verified client certificate, if the connection has one.
fn certificate_principal<T>(request: &tonic::Request<T>) -> Option<Principal> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    subject_common_name(leaf).map(|cn| Principal::user(&cn))
}

/// The interceptor in front of every service: computes the request's [`Principal`] and, on a
/// SASL listener, refuses a request without valid credentials (SASL_AUTHENTICATION_FAILED).
///
/// Credentials are checked against the registry's SCRAM-SHA-256 records, or the inter-broker
/// user's configured password. A success is cached by (user, SHA-256 of the password) with the
/// StoredKey it matched, so PBKDF2 runs once per user and password; a cached entry counts only
/// while the registry still holds that StoredKey, so a deleted user or a changed password takes
/// effect at once.
#[derive(Clone, Debug)]
pub struct Authenticate {
    inner: Arc<AuthState>,
}

struct AuthState {
    sasl: bool,
    registry: Option<Arc<dyn Registry>>,
    inter_broker: Option<(String, String)>,
    cache: Mutex<HashMap<(String, [u8; 32]), String>>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("sasl", &self.sasl)
            .finish_non_exhaustive()
    }
}

fn auth_failed(message: impl Into<String>) -> tonic::Status {
    crate::errors::status(ErrorCode::SaslAuthenticationFailed, message)
}

fn metadata_text(request: &tonic::Request<()>, key: &str) -> Option<String> {
    let v = request.metadata().get_bin(key)?.to_bytes().ok()?;
    String::from_utf8(v.to_vec()).ok()
}

impl Authenticate {
    /// For a listener with `options`; `registry` holds the credentials.
    pub fn new(options: &SecurityOptions, registry: Arc<dyn Registry>) -> Authenticate {
        Authenticate {
            inner: Arc::new(AuthState {
                sasl: options.protocol.uses_sasl(),
                registry: Some(registry),
                inter_broker: options
                    .inter_broker_username
                    .clone()
                    .zip(options.inter_broker_password.clone()),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The SASL user of a request, or why it is refused.
    fn sasl_user(
        &self,
        request: &tonic::Request<()>,
    ) -> std::result::Result<String, tonic::Status> {
        let st = &self.inner;
        let (Some(user), Some(password)) = (
            metadata_text(request, USERNAME_METADATA_KEY),
            metadata_text(request, PASSWORD_METADATA_KEY),
        ) else {
            return Err(auth_failed(
                "this broker authenticates every request: set security.protocol=SASL_SSL (or \
                 SASL_PLAINTEXT) with sasl.username and sasl.password",
            ));
        };
        let refused = |user: &str| {
            auth_failed(format!(
                "authentication failed for user {user:?}: unknown user or wrong password"
            ))
        };
        if let Some((u, p)) = &st.inter_broker
            && *u == user
        {
            return if constant_time_eq(p.as_bytes(), password.as_bytes()) {
                Ok(user)
            } else {
                Err(refused(&user))
            };
        }
        let Some(credential) = st.registry.as_ref().and_then(|r| r.credential(&user)) else {
            // Cost an unknown user as much as a wrong password (as Kafka's SCRAM answers an
            // unknown user with a fake salt), so response times do not tell which users exist.
            if let Some(c) = unknown_user_credential() {
                let _ = c.verify(&password);
            }
            return Err(refused(&user));
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user, digest);
        if st.cache.lock().get(&key) == Some(&credential.stored_key) {
            return Ok(key.0);
        }
        // PBKDF2 (milliseconds): only on a cache miss.
        if !credential.verify(&password) {
            return Err(refused(&key.0));
        }
        let mut cache = st.cache.lock();
        if cache.len() >= AUTH_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(key.clone(), credential.stored_key);
        Ok(key.0)
    }
}

/// The credential an unknown user's password is checked against (the result is ignored: only
/// the cost matters).
/// `None` only if the system had no randomness for its salt.
fn unknown_user_credential() -> Option<&'static ScramCredential> {
    static CREDENTIAL: std::sync::OnceLock<Option<ScramCredential>> = std::sync::OnceLock::new();
    CREDENTIAL
        .get_or_init(|| ScramCredential::new("unknown user", 0).ok())
        .as_ref()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for Authenticate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let principal = if self.inner.sasl {
            Principal::user(&self.sasl_user(&request)?)
        } else {
            certificate_principal(&request).unwrap_or_else(Principal::anonymous)
        };
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Kafka's authorizer over the registry's ACLs (`sluiceway_core::acl::authorize`), with super
/// users and the inter-broker user allowed everything. Off: everything is allowed.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    allow_if_no_acl_found: bool,
    super_users: Vec<String>,
    registry: Arc<dyn Registry>,
}

impl Authorizer {
    pub fn new(options: &SecurityOptions, registry: Arc<dyn Registry>) -> Authorizer {
        let mut super_users = options.super_users.clone();
        if let Some(u) = &options.inter_broker_username {
            super_users.push(format!("User:{u}"));
        }
        Authorizer {
            enabled: options.authorizer,
            allow_if_no_acl_found: options.allow_everyone_if_no_acl_found,
            super_users,
            registry,
        }
    }

    /// Whether `principal` may perform `op` on `rtype` `name`.
    pub fn allowed(
        &self,
        principal: &Principal,
        op: AclOperation,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| **s == *principal.0) {
            return true;
        }
        let acls = self.registry.acls();
        authorize(
            acls.iter(),
            principal.as_str(),
            op,
            rtype,
            name,
            self.allow_if_no_acl_found,
        )
    }

    /// [`Authorizer::allowed`], or the denial with Kafka's code for the resource type and a
    /// message naming principal, operation and resource.
    pub fn check(
        &self,
        principal: &Principal,
        op: AclOperation,
        rtype: ResourceType,
        name: &str,
    ) -> std::result::Result<(), tonic::Status> {
        if self.allowed(principal, op, rtype, name) {
            return Ok(());
        }
        let code = match rtype {
            ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
            ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
            ResourceType::Cluster => ErrorCode::ClusterAuthorizationFailed,
        };
        Err(crate::errors::status(
            code,
            format!("principal {principal} is not authorized to {op} {rtype} {name:?}"),
        ))
    }

    /// [`Authorizer::check`] of the same operation on several topics (each checked once).
    pub fn check_topics<'a>(
        &self,
        principal: &Principal,
        op: AclOperation,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> std::result::Result<(), tonic::Status> {
        if !self.enabled {
            return Ok(());
        }
        let mut seen: Vec<&str> = Vec::new();
        for t in topics {
            if !seen.contains(&t) {
                self.check(principal, op, ResourceType::Topic, t)?;
                seen.push(t);
            }
        }
        Ok(())
    }
}

/// The interceptor of a TLS listener's plaintext connections: refuses every request, saying why.
#[derive(Clone, Copy, Debug)]
pub struct RefusePlaintext;

impl tonic::service::Interceptor for RefusePlaintext {
    fn call(
        &mut self,
        _request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        Err(crate::errors::status(
            ErrorCode::InvalidRequest,
            "this broker's listener uses TLS and the client connected in plaintext: set \
             security.protocol=SSL (or SASL_SSL) and ssl.ca.location",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_der_yields_no_name() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(subject_common_name(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01]),
            None
        );
    }

    #[test]
    fn super_users_parse() {
        assert_eq!(
            parse_principals("s", "User:a; User:b;").unwrap(),
            ["User:a", "User:b"]
        );
        assert!(parse_principals("s", "alice").is_err());
    }
}
