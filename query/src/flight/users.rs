//! Analyst accounts: a file the operator manages, one account a line.
//!
//! ```text
//! # name:Argon2 PHC string
//! alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$…
//! bob:$argon2id$v=19$m=19456,t=2,p=1$…
//! ```
//!
//! Passwords are stored only as Argon2id hashes in the PHC string format (OWASP Password
//! Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1, which is the `argon2` crate's
//! default). `query add-user --users-file F NAME` appends a line (the password is read from
//! standard input); any Argon2 tool that prints PHC strings works too (Debian's `argon2 SALT
//! -id -e`, Python's `argon2-cffi`). Blank lines and lines starting with `#` are ignored. A
//! name is 1–64 of `A-Z a-z 0-9 . _ @ -`.
//!
//! The server reads the file at start-up (a bad file stops it, naming `--users-file` and
//! the line) and again whenever its modification time changes, so adding or removing a user
//! needs no restart; a file that became invalid is logged and the accounts read before are
//! kept.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use crate::error::{Error, Result};

/// The flag naming the file, for errors.
pub const FLAG: &str = "--users-file";

fn bad(message: String) -> Error {
    Error::Common(vitalsink_common::Error::Config {
        key: FLAG.into(),
        message,
    })
}

/// Whether `name` is a valid account name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// Parses the text of an accounts file: name → PHC string.
///
/// # Errors
/// [`Error::Common`] (a configuration error naming `--users-file`, the file and the line)
/// for a line without `:`, an invalid name, a duplicate name, or a hash that is not an Argon2
/// PHC string.
pub fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{} line {}", path.display(), i + 1);
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("{at}: expected NAME:HASH")))?;
        if !valid_name(name) {
            return Err(bad(format!(
                "{at}: invalid name {name:?} (1-64 of A-Z a-z 0-9 . _ @ -)"
            )));
        }
        let parsed = PasswordHash::new(hash)
            .map_err(|e| bad(format!("{at}: the hash is not a PHC string ({e})")))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(bad(format!(
                "{at}: the hash is {}, not Argon2",
                parsed.algorithm
            )));
        }
        if users.insert(name.to_string(), hash.to_string()).is_some() {
            return Err(bad(format!("{at}: {name} is listed twice")));
        }
    }
    Ok(users)
}

/// The PHC string of `password` (Argon2id, the crate's default parameters, a random 16-byte
/// salt).
///
/// # Errors
/// [`Error::Output`] when hashing fails (never for a non-empty password in practice).
pub fn hash(password: &str) -> Result<String> {
    use rand::Rng;
    let salt: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Output(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Output(e.to_string()))
}

struct Loaded {
    modified: Option<SystemTime>,
    users: BTreeMap<String, String>,
}

/// The accounts of one server: the file's, re-read when it changes.
pub struct Accounts {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("path", &self.path)
            .finish()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Accounts {
    /// Reads `path`.
    ///
    /// # Errors
    /// A configuration error naming `--users-file` when the file cannot be read, is invalid
    /// ([`parse`]) or holds no account.
    pub fn open(path: PathBuf) -> Result<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let users = parse(&path, &text)?;
        if users.is_empty() {
            return Err(bad(format!("{} holds no account", path.display())));
        }
        Ok(Self {
            loaded: RwLock::new(Loaded {
                modified: modified(&path),
                users,
            }),
            path,
        })
    }

    /// Re-reads the file when its modification time changed; keeps the accounts it had when
    /// the new text is invalid (logged).
    fn refresh(&self) {
        let now = modified(&self.path);
        let stale = self
            .loaded
            .read()
            .map(|l| l.modified != now)
            .unwrap_or(false);
        if !stale {
            return;
        }
        let read = std::fs::read_to_string(&self.path)
            .map_err(|e| bad(format!("cannot read {}: {e}", self.path.display())))
            .and_then(|t| parse(&self.path, &t));
        match (read, self.loaded.write()) {
            (Ok(users), Ok(mut l)) => {
                tracing::info!(file = %self.path.display(), accounts = users.len(), "accounts re-read");
                *l = Loaded {
                    modified: now,
                    users,
                };
            }
            (Err(e), Ok(mut l)) => {
                tracing::error!(error = %e, "accounts file changed but is invalid; keeping the accounts read before");
                l.modified = now;
            }
            (_, Err(_)) => {}
        }
    }

    fn hash_of(&self, user: &str) -> Option<String> {
        self.refresh();
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.users.get(user).cloned())
    }

    /// Whether `user` has an account now.
    pub fn exists(&self, user: &str) -> bool {
        self.hash_of(user).is_some()
    }

    /// Whether `password` is `user`'s (an Argon2 verification: about 20-50 ms of one core).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(phc) = self.hash_of(user) else {
            return false;
        };
        PasswordHash::new(&phc)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let a = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        std::fs::write(&path, format!("# analysts\n\nalice:{a}\n")).unwrap();
        let acc = Accounts::open(path.clone()).unwrap();
        assert!(acc.verify("alice", "correct horse"));
        assert!(!acc.verify("alice", "correct horse "));
        assert!(!acc.verify("bob", "correct horse"));
        // A user added to the file is seen without a restart (mtime resolution: 1 s on some
        // file systems, so set it explicitly).
        let b = hash("battery staple").unwrap();
        std::fs::write(&path, format!("alice:{a}\nbob:{b}\n")).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(acc.verify("bob", "battery staple"));
        for (text, needle) in [
            ("alice", "expected NAME:HASH"),
            (
                "al ice:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                "invalid name",
            ),
            ("alice:plaintext", "not a PHC string"),
            (&*format!("alice:{a}\nalice:{a}"), "listed twice"),
        ] {
            let e = parse(&path, text).unwrap_err().to_string();
            assert!(e.contains(FLAG) && e.contains(needle), "{text}: {e}");
        }
    }
}
