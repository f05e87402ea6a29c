//! API keys: the two flag keys and the `--api-keys-file` entries, held only as SHA-256
//! digests and compared in constant time. A lookup computes one digest (≈90 ns for a 43-byte
//! key) and compares it with every entry without stopping at a match, so neither which entry
//! matched nor how much of a digest agreed shows in the timing. Each comparison folds the
//! XOR of four 64-bit words into one and tests that in constant time (a few ns; subtle's
//! byte-slice `ct_eq` took ≈50 ns a digest, 5 µs a lookup at 100 keys), so a lookup stays
//! around a microsecond even at a hundred keys (`cargo bench --bench auth`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::Role;

/// A SHA-256 digest of a key.
pub type KeyDigest = [u8; 32];

/// A digest as four words, the unit of the constant-time comparison.
type Words = [u64; 4];

fn words(digest: &KeyDigest) -> Words {
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(digest.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes"));
    }
    words
}

/// The SHA-256 digest of `key`.
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// One accepted key.
#[derive(Clone)]
struct KeyEntry {
    name: Arc<str>,
    role: Role,
    digest: Words,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a digest stays out of logs: a weak key could be found from it.
        f.debug_struct("KeyEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The accepted API keys.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Accepts a key with `digest` as the credential `name` with `role`. Refuses a name or a
    /// key already in the set, saying which.
    pub fn add(&mut self, name: &str, role: Role, digest: KeyDigest) -> Result<(), String> {
        let digest = words(&digest);
        if self.entries.iter().any(|entry| &*entry.name == name) {
            return Err(format!("duplicate name {name:?}"));
        }
        if let Some(entry) = self.entries.iter().find(|entry| entry.digest == digest) {
            return Err(format!(
                "the same key as {:?} (each key must be unique)",
                entry.name
            ));
        }
        self.entries.push(KeyEntry {
            name: name.into(),
            role,
            digest,
        });
        Ok(())
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The name and role of `key`, if it is accepted; constant time in which entry matched.
    pub fn find(&self, key: &[u8]) -> Option<(&Arc<str>, Role)> {
        if self.entries.is_empty() {
            return None;
        }
        self.find_digest(&digest(key))
    }

    /// The name and role of the key whose digest is `presented`, as `find`.
    pub fn find_digest(&self, presented: &KeyDigest) -> Option<(&Arc<str>, Role)> {
        let presented = words(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            // Branch-free: the words' differences folded into one, then one constant-time test.
            let difference = entry
                .digest
                .iter()
                .zip(&presented)
                .fold(0u64, |folded, (a, b)| folded | (a ^ b));
            let equal = difference.ct_eq(&0);
            index.conditional_assign(&(i as u32), equal);
            found |= equal;
        }
        if bool::from(found) {
            let entry = &self.entries[index as usize];
            Some((&entry.name, entry.role))
        } else {
            None
        }
    }
}

/// Why a keys file could not be used; names the file and the entry (or the TOML line).
#[derive(Debug, thiserror::Error)]
#[error("keys file {}: {reason}", path.display())]
pub struct KeysFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where in the file.
    pub reason: String,
}

/// The file as written: `[[keys]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    keys: Vec<RawKey>,
}

/// One `[[keys]]` table before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Option<String>,
    role: Option<String>,
    key: Option<String>,
    key_sha256: Option<String>,
}

/// A checked keys-file entry.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey {
    /// The credential's name in logs and rate limits.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the key.
    pub digest: KeyDigest,
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a digest stays out of logs: a weak key could be found from it.
        f.debug_struct("FileKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Reads and checks the keys file at `path`.
pub fn read_keys_file(path: &Path) -> Result<Vec<FileKey>, KeysFileError> {
    let fail = |reason: String| KeysFileError {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse_keys_file(&text).map_err(fail)
}

/// Checks the text of a keys file; the error names the entry (1-based) or the TOML line.
pub fn parse_keys_file(text: &str) -> Result<Vec<FileKey>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(&e, text))?;
    let mut names: Vec<&str> = Vec::new();
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (index, entry) in raw.keys.iter().enumerate() {
        let number = index + 1;
        let at = |reason: String| match &entry.name {
            Some(name) => format!("entry {number} (name {name:?}): {reason}"),
            None => format!("entry {number}: {reason}"),
        };
        let name = match entry.name.as_deref() {
            None => return Err(at("`name` is missing".into())),
            Some(name) if name.trim().is_empty() => return Err(at("`name` is empty".into())),
            Some(name) => name,
        };
        if names.contains(&name) {
            return Err(at(format!("duplicate name {name:?}")));
        }
        names.push(name);
        let role = match entry.role.as_deref() {
            None => return Err(at("`role` is missing (reader, writer or admin)".into())),
            Some(role) => Role::parse(role).ok_or_else(|| {
                at(format!(
                    "unknown role {role:?} (expected reader, writer or admin)"
                ))
            })?,
        };
        let digest = match (&entry.key, &entry.key_sha256) {
            (Some(key), None) if key.is_empty() => return Err(at("`key` is empty".into())),
            (Some(key), None) => digest(key.as_bytes()),
            (None, Some(hex)) => parse_sha256_hex(hex).ok_or_else(|| {
                at("`key_sha256` must be 64 hex digits (the SHA-256 of the key)".into())
            })?,
            (Some(_), Some(_)) => {
                return Err(at("give either `key` or `key_sha256`, not both".into()))
            }
            (None, None) => return Err(at("`key` or `key_sha256` is missing".into())),
        };
        if let Some(other) = keys.iter().find(|k: &&FileKey| k.digest == digest) {
            return Err(at(format!(
                "the same key as {:?} (each key must be unique)",
                other.name
            )));
        }
        keys.push(FileKey {
            name: name.to_owned(),
            role,
            digest,
        });
    }
    Ok(keys)
}

/// Where and why the file is not TOML of the expected shape, without quoting the file:
/// toml's own message repeats the offending line, and serde's may repeat a value, either of
/// which can be a key. Only messages that name a field (never a value) are passed on.
fn toml_error(error: &toml::de::Error, text: &str) -> String {
    let place = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        }
        None => "the file".to_owned(),
    };
    let message = error.message();
    let names_only = [
        "unknown field",
        "missing field",
        "duplicate key",
        "duplicate field",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix));
    let reason = if names_only {
        message.trim_end()
    } else {
        "not valid TOML, or a value of the wrong type (the text is not repeated: it may hold a key)"
    };
    format!("{place}: {reason}")
}

/// 64 hex digits (either case) as 32 bytes.
fn parse_sha256_hex(hex: &str) -> Option<KeyDigest> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_OF_SECRET: &str =
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn reads_plain_and_digest_entries() {
        let keys = parse_keys_file(&format!(
            r#"
            [[keys]]
            name = "ci"
            role = "writer"
            key = "other"

            [[keys]]
            name = "dash"
            role = "reader"
            key_sha256 = "{}"
            "#,
            SHA256_OF_SECRET.to_uppercase()
        ))
        .expect("valid file");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].digest, digest(b"other"));
        assert_eq!(keys[0].role, Role::Writer);
        assert_eq!(keys[1].role, Role::Reader);
        assert_eq!(
            keys[1].digest,
            digest(b"secret"),
            "upper-case hex is read too"
        );
    }

    #[test]
    fn a_digest_entry_matches_its_key() {
        let keys = parse_keys_file(&format!(
            "[[keys]]\nname = \"a\"\nrole = \"admin\"\nkey_sha256 = \"{SHA256_OF_SECRET}\"\n"
        ))
        .expect("valid file");
        let mut set = KeySet::default();
        set.add(&keys[0].name, keys[0].role, keys[0].digest)
            .expect("first key");
        let (name, role) = set.find(b"secret").expect("the key matches its digest");
        assert_eq!((&**name, role), ("a", Role::Admin));
        assert!(set.find(b"secret ").is_none());
        assert!(set.find(b"").is_none());
    }

    #[test]
    fn errors_name_the_entry_and_the_rule() {
        let cases = [
            (
                "[[keys]]\nname = \"a\"\nrole = \"root\"\nkey = \"k\"\n",
                "entry 1 (name \"a\"): unknown role \"root\"",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"k\"\n[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"j\"\n",
                "entry 2 (name \"a\"): duplicate name \"a\"",
            ),
            (
                "[[keys]]\nrole = \"reader\"\nkey = \"k\"\n",
                "entry 1: `name` is missing",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"reader\"\n",
                "entry 1 (name \"a\"): `key` or `key_sha256` is missing",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey_sha256 = \"abc\"\n",
                "must be 64 hex digits",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"k\"\n[[keys]]\nname = \"b\"\nrole = \"admin\"\nkey = \"k\"\n",
                "entry 2 (name \"b\"): the same key as \"a\"",
            ),
            ("[[keys]\nname = 1", "line 1, column"),
            (
                "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"k\"\nkey_sha265 = \"x\"\n",
                "key_sha265",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_keys_file(text).expect_err(text);
            assert!(
                error.contains(expected),
                "{text:?}: expected {expected:?} in {error:?}"
            );
        }
    }

    #[test]
    fn a_broken_file_is_located_but_never_quoted() {
        let cases = [
            (
                "[[keys]]\nname = \"a\"\nrole = \"admin\"\nkey = \"leak-me-1\n",
                "line 4",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"admin\"\nkey = 987654321\n",
                "line 4",
            ),
            (
                "[[keys]]\nname = \"a\"\nrole = \"admin\"\nkye = \"leak-me-2\"\n",
                "unknown field `kye`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_keys_file(text).expect_err(text);
            assert!(error.contains(expected), "{expected:?} in {error:?}");
            for secret in ["leak-me", "987654321"] {
                assert!(!error.contains(secret), "{error:?} repeats the key");
            }
        }
        let plus = format!("+{}", &SHA256_OF_SECRET[1..]);
        assert!(parse_sha256_hex(&plus).is_none(), "only hex digits");
    }

    #[test]
    fn an_empty_file_accepts_no_key() {
        assert!(parse_keys_file("").expect("empty is valid").is_empty());
    }

    #[test]
    fn the_set_refuses_duplicate_names_and_keys() {
        let mut set = KeySet::default();
        set.add("admin", Role::Admin, digest(b"k")).expect("first");
        assert!(set
            .add("admin", Role::Reader, digest(b"j"))
            .unwrap_err()
            .contains("duplicate name"));
        assert!(set
            .add("other", Role::Reader, digest(b"k"))
            .unwrap_err()
            .contains("same key"));
    }
}
