//! HS256 JSON Web Tokens as bearer credentials (API.md §7): the secret is the bytes of
//! `--jwt-secret-file` without trailing whitespace; `exp` and `role` are required, `sub` and
//! `nbf` optional, and there is no leeway. Verification is `jsonwebtoken`'s.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Caller, Role};

/// The claims NeuroGraph reads; any others are ignored.
#[derive(Deserialize)]
struct Claims {
    role: Option<String>,
    sub: Option<String>,
}

/// Checks bearer JWTs against one HS256 secret.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
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
    /// A required claim is absent.
    #[error("JWT has no `{0}` claim")]
    MissingClaim(&'static str),
    /// `role` names no role.
    #[error("JWT role {0:?} is not reader, writer or admin")]
    UnknownRole(String),
    /// Not HS256.
    #[error("JWT algorithm must be HS256")]
    WrongAlgorithm,
    /// Not a JWT at all, or claims of the wrong type.
    #[error("malformed JWT: {0}")]
    Malformed(String),
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
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        Ok(JwtVerifier { key, validation })
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

    /// The caller `token` proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Caller, JwtError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                ErrorKind::MissingRequiredClaim(_) => JwtError::MissingClaim("exp"),
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    JwtError::WrongAlgorithm
                }
                _ => JwtError::Malformed(e.to_string()),
            },
        )?;
        let role = data.claims.role.ok_or(JwtError::MissingClaim("role"))?;
        let role = Role::parse(&role).ok_or(JwtError::UnknownRole(role))?;
        let name: Arc<str> = match data.claims.sub {
            Some(sub) if !sub.is_empty() => sub.into(),
            _ => "jwt".into(),
        };
        Ok(Caller { name, role })
    }
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
        let caller = verifier.verify(&token).expect("valid");
        assert_eq!((&*caller.name, caller.role), ("svc", Role::Writer));
        let token = sign(json!({"exp": now() + 60, "role": "reader"}), SECRET);
        assert_eq!(&*verifier.verify(&token).expect("valid").name, "jwt");
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
            (
                sign(json!({"role": "admin"}), SECRET),
                JwtError::MissingClaim("exp"),
            ),
            (
                sign(json!({"exp": now() + 60, "role": "root"}), SECRET),
                JwtError::UnknownRole("root".into()),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify(&token).unwrap_err(), expected);
        }
        assert!(matches!(
            verifier.verify("not.a.jwt").unwrap_err(),
            JwtError::Malformed(_)
        ));
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
