//! HS256 JSON Web Tokens as bearer credentials (API.md §7): the secret is the bytes of
//! `--jwt-secret-file` without trailing whitespace; `exp` and `role` are required, `sub` and
//! `nbf` optional, and there is no leeway. Verification is `jsonwebtoken`'s.
//!
//! A full verification costs ≈2 µs (base64, HMAC-SHA-256 and two JSON parses inside
//! jsonwebtoken), about the whole per-call budget, and a client sends the same token on every
//! call until it expires. So tokens that verified are remembered by the SHA-256 of their text
//! (computed anyway for the API-key lookup) with their `exp` and `nbf`, which are checked again
//! at every use; a token that failed is never remembered, the memory is bounded
//! (`MAX_REMEMBERED`), and a reload starts with none (a new secret, a new verifier).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::keys::KeyDigest;
use super::{Caller, Role};

/// Verified tokens remembered at most; past that the memory starts again empty.
const MAX_REMEMBERED: usize = 10_000;

/// The claims NeuroGraph reads; any others are ignored.
#[derive(Deserialize)]
struct Claims {
    role: Option<String>,
    sub: Option<String>,
    // Read loosely here: jsonwebtoken's own validation, run on the same claims, refuses an
    // `exp` or `nbf` that is not whole seconds, with the more telling error.
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// What a token that verified proves, and when.
#[derive(Clone, Debug)]
pub struct VerifiedJwt {
    /// Who it names, with which role.
    pub caller: Caller,
    /// `exp`, Unix seconds: valid while not before now.
    pub expires_at: u64,
    /// `nbf`, Unix seconds, if given: valid from then on.
    pub not_before: Option<u64>,
}

impl VerifiedJwt {
    /// Whether the token holds at `now` (Unix seconds), by the rules of its verification:
    /// valid strictly before `exp` (RFC 7519 §4.1.4, no leeway), from `nbf` on.
    fn check_time(&self, now: u64) -> Result<(), JwtError> {
        if self.expires_at <= now {
            return Err(JwtError::Expired);
        }
        if self.not_before.is_some_and(|nbf| nbf > now) {
            return Err(JwtError::NotYetValid);
        }
        Ok(())
    }
}

/// Checks bearer JWTs against one HS256 secret.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens that verified, by the SHA-256 of their text.
    remembered: DashMap<KeyDigest, VerifiedJwt, foldhash::fast::RandomState>,
    /// Roughly how many are remembered (DashMap's own `len` visits every shard).
    remembered_count: AtomicUsize,
}

impl std::fmt::Debug for JwtVerifier {
    // The key stays out of every log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier { .. }")
    }
}

/// Why a JWT was refused; the message says which rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The signature does not verify with the configured secret.
    #[error("JWT signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("JWT has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `exp` is absent, or not whole seconds.
    #[error("JWT has no `exp` claim (whole seconds since 1970)")]
    NoExpiry,
    /// A required claim is absent.
    #[error("JWT has no `{0}` claim")]
    MissingClaim(&'static str),
    /// `role` names no role.
    #[error("JWT role {0:?} is not reader, writer or admin")]
    UnknownRole(String),
    /// Not HS256.
    #[error("JWT algorithm must be HS256")]
    WrongAlgorithm,
    /// Not a JWT at all, or claims of the wrong type; the detail never quotes the token.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
}

impl JwtVerifier {
    /// A verifier for `secret`.
    pub fn new(secret: &[u8]) -> Result<JwtVerifier, String> {
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // jsonwebtoken accepts a token during the second `exp` names; RFC 7519 wants the
        // current time strictly before `exp`, so expire one second earlier in its terms.
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        Ok(JwtVerifier {
            key,
            validation,
            remembered: DashMap::default(),
            remembered_count: AtomicUsize::new(0),
        })
    }

    /// A verifier for the secret in the file at `path` (trailing whitespace removed, so that
    /// a file ending in a newline works).
    pub fn from_file(path: &Path) -> Result<JwtVerifier, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        JwtVerifier::new(&bytes[..end])
    }

    /// The caller `token` (whose SHA-256 is `digest`) proves, or why it proves nothing; a
    /// token verified before is only checked against the clock.
    pub fn verify_remembered(&self, token: &str, digest: &KeyDigest) -> Result<Caller, JwtError> {
        let now = unix_now();
        if let Some(known) = self.remembered.get(digest) {
            known.check_time(now)?;
            return Ok(known.caller.clone());
        }
        let verified = self.verify(token)?;
        let caller = verified.caller.clone();
        if self.remembered_count.fetch_add(1, Ordering::Relaxed) >= MAX_REMEMBERED {
            self.remembered.clear();
            self.remembered_count.store(1, Ordering::Relaxed);
        }
        self.remembered.insert(*digest, verified);
        Ok(caller)
    }

    /// Verifies `token` in full: signature, `exp`, `nbf`, `role`.
    pub fn verify(&self, token: &str) -> Result<VerifiedJwt, JwtError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                ErrorKind::MissingRequiredClaim(_) => JwtError::NoExpiry,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    JwtError::WrongAlgorithm
                }
                ErrorKind::InvalidClaimFormat(_) => {
                    JwtError::Malformed("`exp` and `nbf` must be whole seconds since 1970")
                }
                ErrorKind::Base64(_) => JwtError::Malformed("a part is not base64url"),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    JwtError::Malformed("the header or claims are not JSON of the expected types")
                }
                _ => JwtError::Malformed("not a JWT (header.claims.signature)"),
            },
        )?;
        let role = data.claims.role.ok_or(JwtError::MissingClaim("role"))?;
        let role = Role::parse(&role).ok_or(JwtError::UnknownRole(role))?;
        let name: Arc<str> = match data.claims.sub {
            Some(sub) if !sub.is_empty() => sub.into(),
            _ => "jwt".into(),
        };
        Ok(VerifiedJwt {
            caller: Caller {
                name,
                role,
                credential: true,
            },
            // jsonwebtoken refused a token without `exp`.
            expires_at: data.claims.exp.as_ref().and_then(seconds).unwrap_or(0),
            not_before: data.claims.nbf.as_ref().and_then(seconds),
        })
    }
}

/// A NumericDate claim as whole seconds: jsonwebtoken also accepts fractional ones; rounding
/// down keeps a remembered token from outliving the `exp` its verification saw.
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s as u64)
    })
}

/// Seconds since the Unix epoch, the clock jsonwebtoken checks `exp` and `nbf` against.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret).expect("key"),
        )
        .expect("sign")
    }

    #[test]
    fn accepts_a_valid_token_and_names_it_by_sub() {
        let verifier = JwtVerifier::new(SECRET).expect("verifier");
        let token = sign(
            json!({"exp": now() + 60, "role": "writer", "sub": "svc"}),
            SECRET,
        );
        let caller = verifier.verify(&token).expect("valid").caller;
        assert_eq!((&*caller.name, caller.role), ("svc", Role::Writer));
        let token = sign(json!({"exp": now() + 60, "role": "reader"}), SECRET);
        assert_eq!(&*verifier.verify(&token).expect("valid").caller.name, "jwt");
    }

    #[test]
    fn says_which_rule_a_token_breaks() {
        let verifier = JwtVerifier::new(SECRET).expect("verifier");
        let cases = [
            (
                sign(json!({"exp": now() + 60, "role": "admin"}), b"other"),
                JwtError::BadSignature,
            ),
            (
                sign(json!({"exp": now() - 1, "role": "admin"}), SECRET),
                JwtError::Expired,
            ),
            (
                sign(json!({"exp": now(), "role": "admin"}), SECRET),
                JwtError::Expired,
            ),
            (
                sign(json!({"exp": "tomorrow", "role": "admin"}), SECRET),
                JwtError::NoExpiry,
            ),
            (
                sign(
                    json!({"exp": now() + 60, "nbf": now() + 30, "role": "admin"}),
                    SECRET,
                ),
                JwtError::NotYetValid,
            ),
            (
                sign(json!({"exp": now() + 60}), SECRET),
                JwtError::MissingClaim("role"),
            ),
            (sign(json!({"role": "admin"}), SECRET), JwtError::NoExpiry),
            (
                sign(json!({"exp": now() + 60, "role": "root"}), SECRET),
                JwtError::UnknownRole("root".into()),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify(&token).unwrap_err(), expected);
            let digest = crate::auth::keys::digest(token.as_bytes());
            assert_eq!(
                verifier.verify_remembered(&token, &digest).unwrap_err(),
                expected,
                "a refused token is refused again, never remembered"
            );
        }
        assert!(matches!(
            verifier.verify("not.a.jwt").unwrap_err(),
            JwtError::Malformed(_)
        ));
    }

    #[test]
    fn a_remembered_token_is_still_checked_against_the_clock() {
        let verifier = JwtVerifier::new(SECRET).expect("verifier");
        let token = sign(json!({"exp": now() + 60, "role": "admin"}), SECRET);
        let digest = crate::auth::keys::digest(token.as_bytes());
        let first = verifier.verify_remembered(&token, &digest).expect("valid");
        let again = verifier
            .verify_remembered(&token, &digest)
            .expect("remembered");
        assert_eq!(first, again);
        let known = VerifiedJwt {
            caller: first,
            expires_at: 100,
            not_before: Some(50),
        };
        assert_eq!(known.check_time(99), Ok(()));
        assert_eq!(
            known.check_time(100),
            Err(JwtError::Expired),
            "no leeway at exp"
        );
        assert_eq!(known.check_time(49), Err(JwtError::NotYetValid));
        assert_eq!(known.check_time(50), Ok(()));
    }

    #[test]
    fn a_fractional_exp_is_remembered_rounded_down() {
        let verifier = JwtVerifier::new(SECRET).expect("verifier");
        let exp = now() + 60;
        let token = sign(json!({"exp": exp as f64 + 0.5, "role": "admin"}), SECRET);
        let verified = verifier.verify(&token).expect("valid");
        assert_eq!(verified.expires_at, exp);
    }

    #[test]
    fn the_secret_file_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, b"test-secret\n").expect("write");
        let verifier = JwtVerifier::from_file(&path).expect("verifier");
        let token = sign(json!({"exp": now() + 60, "role": "admin"}), SECRET);
        assert!(verifier.verify(&token).is_ok());
    }
}
