//! The live credential set and the decision for one call: which caller the metadata (or the
//! connection's client certificate) proves, and whether its role suffices. Built from the
//! config at start and again on SIGHUP; a build that fails names the file and the entry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;

use super::jwt::{JwtError, JwtVerifier};
use super::keys::{self, KeySet, KeysFileError};
use super::{Caller, Role};
use crate::config::AccessConfig;

/// Message of protected mode's refusal (API.md §7), exactly.
pub const PROTECTED_MODE: &str = "protected mode: no credentials are configured (set --api-key or --api-keys-file, or pass --allow-unauthenticated)";

/// What the transport knows of the peer of a call (tonic puts it in the request extensions).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The common name of the client certificate the TLS handshake verified (mTLS), if any.
    pub client_certificate: Option<Arc<str>>,
}

impl PeerInfo {
    /// Whether the peer connected from a loopback address (IPv4-mapped ones included).
    pub fn is_loopback(&self) -> bool {
        self.remote
            .is_some_and(|addr| addr.ip().to_canonical().is_loopback())
    }
}

/// How calls without a credential are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Some credential is configured: every call needs one.
    Credentialed,
    /// None is configured: loopback peers are admins, others are refused.
    Protected,
    /// None is configured and `--allow-unauthenticated`: everyone is an admin.
    Open,
}

/// Why a call was refused (UNAUTHENTICATED or PERMISSION_DENIED).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential in the metadata, and no client certificate.
    #[error("missing credentials")]
    Missing,
    /// `authorization` metadata that is not `Bearer <credential>`.
    #[error("invalid credentials: `authorization` metadata must be `Bearer <credential>`")]
    MalformedAuthorization,
    /// A key no entry accepts.
    #[error("invalid credentials: unknown API key{hint}")]
    UnknownKey {
        /// Says when the credential looks like a JWT but JWTs are not enabled.
        hint: &'static str,
    },
    /// A JWT that does not verify.
    #[error("invalid credentials: {0}")]
    Jwt(#[from] JwtError),
    /// Protected mode and a peer that is not on loopback.
    #[error("{PROTECTED_MODE}")]
    ProtectedMode,
    /// The caller's role is below the method's.
    #[error("permission denied: {method} needs role {needed}; credential {name:?} has role {has}")]
    RoleTooLow {
        /// The method called, `package.Service/Method`.
        method: String,
        /// The role it needs.
        needed: Role,
        /// The caller's credential name.
        name: Arc<str>,
        /// The caller's role.
        has: Role,
    },
}

impl AuthError {
    /// Whether the credential itself was the problem (UNAUTHENTICATED) rather than its role.
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, AuthError::RoleTooLow { .. })
    }
}

/// Why the configured credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The keys file is unreadable or wrong.
    #[error(transparent)]
    KeysFile(#[from] KeysFileError),
    /// The JWT secret file is unreadable or empty.
    #[error("JWT secret file {}: {reason}", path.display())]
    JwtSecret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two credentials share a name or a key.
    #[error("{0}")]
    Conflict(String),
}

/// Everything that may prove a caller.
#[derive(Debug)]
pub struct Credentials {
    mode: Mode,
    keys: KeySet,
    jwt: Option<JwtVerifier>,
    /// The role of a verified client certificate without a key or JWT (mTLS).
    client_certificate_role: Option<Role>,
    /// The caller of protected and open mode, made once rather than per call.
    keyless: Caller,
}

/// Name of the `--api-key` credential.
const ADMIN_KEY_NAME: &str = "admin";
/// Name of the `--read-only-api-key` credential.
const READ_ONLY_KEY_NAME: &str = "read-only";
/// Caller name of loopback peers in protected mode.
const LOOPBACK_NAME: &str = "loopback";
/// Caller name of everyone with `--allow-unauthenticated`.
const ANONYMOUS_NAME: &str = "anonymous";

impl Credentials {
    /// Reads every credential `config` names (the keys and JWT secret files included).
    pub fn load(config: &AccessConfig) -> Result<Credentials, CredentialsError> {
        let mut keys = KeySet::default();
        let flag_keys = [
            (&config.api_key, ADMIN_KEY_NAME, Role::Admin),
            (&config.read_only_api_key, READ_ONLY_KEY_NAME, Role::Reader),
        ];
        for (key, name, role) in flag_keys {
            if let Some(key) = key {
                keys.add(name, role, keys::digest(key.expose().as_bytes()))
                    .map_err(|e| CredentialsError::Conflict(format!("--api-key flags: {e}")))?;
            }
        }
        if let Some(path) = &config.api_keys_file {
            for entry in keys::read_keys_file(path)? {
                keys.add(&entry.name, entry.role, entry.digest)
                    .map_err(|e| {
                        CredentialsError::Conflict(format!(
                        "keys file {}: entry {:?}: {e} (`admin` and `read-only` are the flag keys)",
                        path.display(),
                        entry.name
                    ))
                    })?;
            }
        }
        let jwt = match &config.jwt_secret_file {
            Some(path) => Some(JwtVerifier::from_file(path).map_err(|reason| {
                CredentialsError::JwtSecret {
                    path: path.clone(),
                    reason,
                }
            })?),
            None => None,
        };
        let client_certificate_role = config
            .tls_client_ca
            .as_ref()
            .map(|_| config.tls_client_role);
        let configured = config.api_key.is_some()
            || config.read_only_api_key.is_some()
            || config.api_keys_file.is_some()
            || config.jwt_secret_file.is_some()
            || client_certificate_role.is_some();
        let mode = match (configured, config.allow_unauthenticated) {
            (true, _) => Mode::Credentialed,
            (false, true) => Mode::Open,
            (false, false) => Mode::Protected,
        };
        let keyless = Caller {
            name: match mode {
                Mode::Open => ANONYMOUS_NAME,
                _ => LOOPBACK_NAME,
            }
            .into(),
            role: Role::Admin,
            credential: false,
        };
        Ok(Credentials {
            mode,
            keys,
            jwt,
            client_certificate_role,
            keyless,
        })
    }

    /// How calls without a credential are treated.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many API keys are accepted.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether JWTs are accepted.
    pub fn accepts_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// The caller of a call to `method` (path without the leading `/`) with `metadata` from
    /// `peer`, if its role reaches `needed`.
    pub fn authorize(
        &self,
        metadata: &HeaderMap,
        peer: Option<&PeerInfo>,
        method: &str,
        needed: Role,
    ) -> Result<Caller, AuthError> {
        let caller = self.authenticate(metadata, peer)?;
        if caller.role < needed {
            return Err(AuthError::RoleTooLow {
                method: method.trim_start_matches('/').to_owned(),
                needed,
                name: caller.name,
                has: caller.role,
            });
        }
        Ok(caller)
    }

    /// The caller `metadata` and `peer` prove.
    pub fn authenticate(
        &self,
        metadata: &HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Caller, AuthError> {
        match self.mode {
            Mode::Open => Ok(self.keyless.clone()),
            Mode::Protected if peer.is_some_and(PeerInfo::is_loopback) => Ok(self.keyless.clone()),
            Mode::Protected => Err(AuthError::ProtectedMode),
            Mode::Credentialed => match presented(metadata)? {
                Some(Presented::Bearer(credential)) => self.verify_bearer(credential),
                Some(Presented::ApiKey(key)) => self.verify_key(key),
                None => {
                    let certificate = peer.and_then(|p| p.client_certificate.as_ref());
                    match (certificate, self.client_certificate_role) {
                        (Some(name), Some(role)) => Ok(Caller {
                            name: Arc::clone(name),
                            role,
                            credential: true,
                        }),
                        _ => Err(AuthError::Missing),
                    }
                }
            },
        }
    }

    /// An API key or, failing that, a JWT.
    fn verify_bearer(&self, credential: &[u8]) -> Result<Caller, AuthError> {
        // One digest serves both the key lookup and the memory of verified JWTs.
        let digest = keys::digest(credential);
        if let Some((name, role)) = self.keys.find_digest(&digest) {
            return Ok(Caller {
                name: Arc::clone(name),
                role,
                credential: true,
            });
        }
        let looks_like_jwt = credential.iter().filter(|b| **b == b'.').count() == 2;
        match (&self.jwt, std::str::from_utf8(credential)) {
            (Some(jwt), Ok(token)) if looks_like_jwt => Ok(jwt.verify_remembered(token, &digest)?),
            (None, _) if looks_like_jwt => Err(AuthError::UnknownKey {
                hint: " (it looks like a JWT, but no --jwt-secret-file is configured)",
            }),
            _ => Err(AuthError::UnknownKey { hint: "" }),
        }
    }

    /// An API key only (`x-api-key`).
    fn verify_key(&self, key: &[u8]) -> Result<Caller, AuthError> {
        self.keys
            .find(key)
            .map(|(name, role)| Caller {
                name: Arc::clone(name),
                role,
                credential: true,
            })
            .ok_or(AuthError::UnknownKey { hint: "" })
    }
}

/// A credential as sent.
enum Presented<'a> {
    /// `authorization: Bearer <credential>`: an API key or a JWT.
    Bearer(&'a [u8]),
    /// `x-api-key: <key>`.
    ApiKey(&'a [u8]),
}

/// The credential in `metadata`: `authorization` first, then `x-api-key`.
fn presented(metadata: &HeaderMap) -> Result<Option<Presented<'_>>, AuthError> {
    if let Some(value) = metadata.get(http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let credential = match bytes.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii(),
            _ => return Err(AuthError::MalformedAuthorization),
        };
        if credential.is_empty() {
            return Err(AuthError::MalformedAuthorization);
        }
        return Ok(Some(Presented::Bearer(credential)));
    }
    match metadata.get("x-api-key").map(|v| v.as_bytes().trim_ascii()) {
        Some(key) if !key.is_empty() => Ok(Some(Presented::ApiKey(key))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> AccessConfig {
        crate::config::Config::for_listen("127.0.0.1:0".parse().expect("addr")).access
    }

    fn peer(addr: &str) -> PeerInfo {
        PeerInfo {
            remote: Some(addr.parse().expect("socket addr")),
            client_certificate: None,
        }
    }

    fn metadata(name: &'static str, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, value.parse().expect("header value"));
        map
    }

    #[test]
    fn protected_mode_admits_loopback_only() {
        let credentials = Credentials::load(&config()).expect("load");
        assert_eq!(credentials.mode(), Mode::Protected);
        let none = HeaderMap::new();
        for addr in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let caller = credentials
                .authenticate(&none, Some(&peer(addr)))
                .expect("loopback is admitted");
            assert_eq!(caller.role, Role::Admin);
        }
        assert_eq!(
            credentials.authenticate(&none, Some(&peer("10.1.2.3:5000"))),
            Err(AuthError::ProtectedMode)
        );
        assert_eq!(
            credentials.authenticate(&none, None),
            Err(AuthError::ProtectedMode)
        );
    }

    #[test]
    fn keys_prove_roles_in_either_header() {
        let mut config = config();
        config.api_key = Some(Secret::new("adm"));
        config.read_only_api_key = Some(Secret::new("ro"));
        let credentials = Credentials::load(&config).expect("load");
        let lo = peer("127.0.0.1:1");
        let admin = credentials
            .authenticate(&metadata("authorization", "Bearer adm"), Some(&lo))
            .expect("admin key");
        assert_eq!((&*admin.name, admin.role), ("admin", Role::Admin));
        let reader = credentials
            .authenticate(&metadata("x-api-key", "ro"), Some(&lo))
            .expect("reader key");
        assert_eq!((&*reader.name, reader.role), ("read-only", Role::Reader));
        assert_eq!(
            credentials.authenticate(&HeaderMap::new(), Some(&lo)),
            Err(AuthError::Missing),
            "loopback is no credential once keys are configured"
        );
        assert_eq!(
            credentials.authenticate(&metadata("authorization", "Basic adm"), Some(&lo)),
            Err(AuthError::MalformedAuthorization)
        );
        assert_eq!(
            credentials.authenticate(&metadata("x-api-key", "wrong"), Some(&lo)),
            Err(AuthError::UnknownKey { hint: "" })
        );
        let denied = credentials
            .authorize(
                &metadata("x-api-key", "ro"),
                Some(&lo),
                "/neurograph.v1.TokenService/ClearTokens",
                Role::Admin,
            )
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: neurograph.v1.TokenService/ClearTokens needs role admin; credential \"read-only\" has role reader"
        );
    }

    #[test]
    fn a_client_certificate_is_a_credential_unless_a_key_is_sent() {
        let mut config = config();
        config.tls_client_ca = Some("ca.pem".into());
        config.api_key = Some(Secret::new("adm"));
        let credentials = Credentials::load(&config).expect("load");
        let with_certificate = PeerInfo {
            remote: Some("10.0.0.2:4000".parse().expect("addr")),
            client_certificate: Some("client-a".into()),
        };
        let caller = credentials
            .authenticate(&HeaderMap::new(), Some(&with_certificate))
            .expect("certificate");
        assert_eq!((&*caller.name, caller.role), ("client-a", Role::Writer));
        let caller = credentials
            .authenticate(&metadata("x-api-key", "adm"), Some(&with_certificate))
            .expect("key decides");
        assert_eq!(caller.role, Role::Admin);
        assert!(credentials
            .authenticate(&metadata("x-api-key", "bad"), Some(&with_certificate))
            .is_err());
    }

    #[test]
    fn allow_unauthenticated_admits_everyone_only_without_credentials() {
        let mut config = config();
        config.allow_unauthenticated = true;
        let open = Credentials::load(&config).expect("load");
        assert_eq!(open.mode(), Mode::Open);
        assert!(open
            .authenticate(&HeaderMap::new(), Some(&peer("10.1.2.3:1")))
            .is_ok());
        config.read_only_api_key = Some(Secret::new("ro"));
        let keyed = Credentials::load(&config).expect("load");
        assert_eq!(keyed.mode(), Mode::Credentialed);
    }
}
