//! Stored credentials as Kafka's SCRAM-SHA-256 keeps them (RFC 5802 / 7677): the password is
//! never stored, only `salt`, `iterations`, `StoredKey = SHA-256(HMAC(SaltedPassword, "Client
//! Key"))` and `ServerKey = HMAC(SaltedPassword, "Server Key")`, where `SaltedPassword =
//! PBKDF2-HMAC-SHA-256(password, salt, iterations)`. A presented password is checked by
//! recomputing `StoredKey` and comparing in constant time. Feature `server`.
//!
//! JSON form (the embedded registry's file and etcd's `users/<name>` value, `docs/FORMAT.md`):
//! `{"mechanism":"SCRAM-SHA-256","salt":B64,"iterations":N,"stored_key":B64,"server_key":B64}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::limits::{
    SASL_PASSWORD_BYTES_MAX, SASL_USERNAME_BYTES_MAX, SCRAM_ITERATIONS_DEFAULT,
    SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_SALT_BYTES,
};

/// The only mechanism stored.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// One user's stored credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub mechanism: String,
    /// Base64.
    pub salt: String,
    pub iterations: u32,
    /// Base64 of the 32-byte StoredKey.
    pub stored_key: String,
    /// Base64 of the 32-byte ServerKey.
    pub server_key: String,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// (StoredKey, ServerKey) of `password`.
fn keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (stored_key, hmac(&salted, b"Server Key"))
}

/// Checks a username: 1..=SASL_USERNAME_BYTES_MAX bytes, no control characters.
pub fn validate_username(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > SASL_USERNAME_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "a username has 1..={SASL_USERNAME_BYTES_MAX} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::InvalidArgument(format!(
            "username {name:?} contains a control character or /"
        )));
    }
    Ok(())
}

impl ScramCredential {
    /// A new credential for `password` with a random salt; `iterations` 0 means the default.
    pub fn new(password: &str, iterations: u32) -> Result<ScramCredential> {
        if password.is_empty() || password.len() > SASL_PASSWORD_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "a password has 1..={SASL_PASSWORD_BYTES_MAX} bytes"
            )));
        }
        let iterations = if iterations == 0 {
            SCRAM_ITERATIONS_DEFAULT
        } else {
            iterations
        };
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
            return Err(Error::InvalidArgument(format!(
                "iterations {iterations} is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}"
            )));
        }
        let mut salt = [0u8; SCRAM_SALT_BYTES];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::InvalidArgument(format!("no randomness for a salt: {e}")))?;
        let (stored, server) = keys(password.as_bytes(), &salt, iterations);
        Ok(ScramCredential {
            mechanism: SCRAM_SHA_256.to_owned(),
            salt: B64.encode(salt),
            iterations,
            stored_key: B64.encode(stored),
            server_key: B64.encode(server),
        })
    }

    /// Checks the fields (a value read from the registry).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.mechanism != SCRAM_SHA_256 {
            return Err(format!(
                "mechanism {:?} is not {SCRAM_SHA_256}",
                self.mechanism
            ));
        }
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!("iterations {} out of range", self.iterations));
        }
        for (what, v) in [
            ("stored_key", &self.stored_key),
            ("server_key", &self.server_key),
        ] {
            match B64.decode(v) {
                Ok(b) if b.len() == 32 => {}
                _ => return Err(format!("{what} is not 32 bytes of base64")),
            }
        }
        B64.decode(&self.salt)
            .map(|_| ())
            .map_err(|_| "salt is not base64".to_owned())
    }

    /// The StoredKey, when the value is well-formed.
    pub fn stored_key_bytes(&self) -> Option<[u8; 32]> {
        B64.decode(&self.stored_key).ok()?.try_into().ok()
    }

    /// Whether `password` is this credential's (PBKDF2: costs `iterations` HMACs; the broker
    /// caches successes). Constant-time in the comparison.
    pub fn verify(&self, password: &str) -> bool {
        let (Some(expected), Ok(salt)) = (self.stored_key_bytes(), B64.decode(&self.salt)) else {
            return false;
        };
        let (stored, _) = keys(password.as_bytes(), &salt, self.iterations);
        stored
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (stored, server) = keys(b"pencil", &salt, 4096);
        // ServerSignature = HMAC(ServerKey, AuthMessage) is the RFC's published value.
        let auth = b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            B64.encode(hmac(&server, auth)),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let c = ScramCredential {
            mechanism: SCRAM_SHA_256.into(),
            salt: B64.encode(&salt),
            iterations: 4096,
            stored_key: B64.encode(stored),
            server_key: B64.encode(server),
        };
        assert!(c.check().is_ok());
        assert!(c.verify("pencil"));
        assert!(!c.verify("pencil "));
    }

    #[test]
    fn new_credentials_verify_and_refuse_bad_input() {
        let c = ScramCredential::new("s3cret", 4096).unwrap();
        assert!(c.verify("s3cret") && !c.verify("secret"));
        assert_ne!(c.salt, ScramCredential::new("s3cret", 4096).unwrap().salt);
        assert!(ScramCredential::new("", 0).is_err());
        assert!(ScramCredential::new("x", 1).is_err());
        assert!(validate_username("a/b").is_err());
    }
}
