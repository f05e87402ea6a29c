//! Access control (API.md §7): who may call which method. Credentials (API keys, a keys file,
//! HS256 JWTs, verified client certificates) are checked in one tower layer in front of every
//! service, never in the handlers; health and reflection pass untouched. Nothing here logs a
//! key, a secret or a JWT.
//!
//! - `methods`: the one table from method to the role it needs;
//! - `keys`: API keys as SHA-256 digests, from the flags and the keys file, compared in
//!   constant time;
//! - `jwt`: HS256 bearer tokens;
//! - `credentials`: the live set and the decision for one call (protected mode included);
//! - `layer`: the tower layer.

pub mod credentials;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod methods;

use std::fmt;
use std::sync::Arc;

pub use credentials::{AuthError, Credentials, CredentialsError, PeerInfo};
pub use layer::AccessControlLayer;

/// What a caller may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    /// Reads, queries and the System RPCs.
    Reader,
    /// Plus token and grid writes.
    Writer,
    /// Plus clearing, CDNA changes and backups.
    Admin,
}

impl Role {
    /// The name used in flags, the keys file, JWT claims and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// The role spelled `name` (exactly as `as_str` writes it).
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Reader, Role::Writer, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a call, as the access layer established it; later layers find it in the request
/// extensions (e.g. to key rate limits by credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The credential's name: a keys-file entry's `name`, `admin` or `read-only` for the flag
    /// keys, a JWT's `sub` (else `jwt`), a client certificate's common name; `loopback` or
    /// `anonymous` when no credential is configured.
    pub name: Arc<str>,
    /// What the credential may do.
    pub role: Role,
    /// Whether a credential proved it (false in protected and open mode, where the caller is
    /// only a peer: rate limits then key by its address).
    pub credential: bool,
}
