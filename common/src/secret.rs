//! Secrets: passwords read from a file (Docker/Kubernetes secrets) or an environment
//! variable at start-up, never required inline in the TOML, and never shown: a [`Secret`]
//! prints as `***` under `Debug` and `Display`, and [`redact_url`] / [`redact_config`] hide
//! any password a connection string or librdkafka property still carries inline.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// What every redaction writes in place of a secret.
pub const MASK: &str = "***";

/// A secret value. `Debug` and `Display` show [`MASK`]; [`Secret::expose`] is the only way
/// to the value, for the one call that hands it to a driver.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(v: impl Into<String>) -> Self {
        Self(v.into())
    }

    /// The value, for the driver that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// Where a password comes from: `password_file` (the file's content, one trailing newline
/// removed: how `docker secret` and Kubernetes mount them) or `password_env` (the named
/// environment variable). Both unset: no password (the connection string's, if any).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSource {
    /// File holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl PasswordSource {
    /// Reads the password. `key` is the configuration path of this source, for errors.
    ///
    /// # Errors
    /// [`Error::Config`] naming `key.password_file` or `key.password_env` when both are set,
    /// the file cannot be read, or the variable is unset or empty. The message never holds
    /// the value.
    pub fn resolve(&self, key: &str) -> Result<Option<Secret>> {
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => Err(Error::Config {
                key: format!("{key}.password_file"),
                message: "set password_file or password_env, not both".into(),
            }),
            (Some(p), None) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    key: format!("{key}.password_file"),
                    message: format!("cannot read {}: {e}", p.display()),
                })?;
                let v = text.strip_suffix('\n').unwrap_or(&text);
                let v = v.strip_suffix('\r').unwrap_or(v);
                if v.is_empty() {
                    return Err(Error::Config {
                        key: format!("{key}.password_file"),
                        message: format!("{} is empty", p.display()),
                    });
                }
                Ok(Some(Secret::new(v)))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                _ => Err(Error::Config {
                    key: format!("{key}.password_env"),
                    message: format!("environment variable {var} is unset or empty"),
                }),
            },
            (None, None) => Ok(None),
        }
    }
}

/// Whether a connection-string or property key names a secret (`password`, `sasl.password`,
/// `ssl.key.password`, `secret_access_key`, …).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token")
}

/// `url` with any inline password replaced by [`MASK`]: the `user:password@` of the URL form
/// and its `?password=` parameter, and `password=…` of the key-value form (quoted or not).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // URL form: scheme://user:password@host
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let auth_end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..auth_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, MASK);
            }
        }
    }
    // `password=` as a URL parameter or a key-value pair.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = find_password_key(rest) {
        let (head, tail) = rest.split_at(i);
        result.push_str(head);
        let eq = tail.find('=').map_or(tail.len(), |j| j + 1);
        let after = &tail[eq..];
        let ws = after.len() - after.trim_start_matches([' ', '\t']).len();
        result.push_str(&tail[..eq + ws]);
        let value = &after[ws..];
        let end = if let Some(q) = value.strip_prefix('\'') {
            // A quoted key-value: up to the closing unescaped quote.
            let mut n = 1;
            let mut chars = q.char_indices();
            while let Some((j, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                    continue;
                }
                if c == '\'' {
                    n = j + 2;
                    break;
                }
                n = j + c.len_utf8() + 1;
            }
            n
        } else {
            value.find([' ', '&', '\t', '\n']).unwrap_or(value.len())
        };
        result.push_str(MASK);
        rest = &value[end..];
    }
    result.push_str(rest);
    result
}

/// Position of the next `password=` key in a connection string (case-insensitive, at the
/// start or after a separator, so `sslpassword=` counts too and `passwords` does not).
fn find_password_key(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        let after = lower[at + "password".len()..].trim_start();
        if after.starts_with('=') {
            return Some(at);
        }
        from = at + "password".len();
    }
    None
}

/// A configuration, as JSON, with its secrets masked: every string under a key that
/// [`is_secret_key`] names, and every connection string (keys `url`, `replicas`,
/// `target_url`, the values of `direct_urls`) through [`redact_url`]. For `check-config` and anything else that prints
/// configuration.
pub fn redact_config(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if is_secret_key(k) && !k.ends_with("_file") && !k.ends_with("_env") {
                    if let serde_json::Value::String(s) = x {
                        *s = MASK.into();
                    }
                } else if matches!(
                    k.as_str(),
                    "url" | "replicas" | "target_url" | "direct_urls"
                ) {
                    redact_strings(x);
                } else {
                    redact_config(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_config),
        _ => {}
    }
}

fn redact_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = redact_url(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_strings),
        serde_json::Value::Object(m) => m.values_mut().for_each(redact_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        for (url, want) in [
            (
                "postgresql://u:s3cret@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            (
                "postgresql://h/db?user=u&password=s3cret&sslmode=require",
                "postgresql://h/db?user=u&password=***&sslmode=require",
            ),
            (
                "host=h password=s3cret user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password = 'se cr\\'et' user=u",
                "host=h password = *** user=u",
            ),
            (
                "host=h sslpassword=k user=u",
                "host=h sslpassword=*** user=u",
            ),
            ("host=h user=u", "host=h user=u"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
        ] {
            let got = redact_url(url);
            assert!(!got.contains("s3cret") && !got.contains("cr\\'et"), "{got}");
            assert_eq!(got.replace("  ", " "), want.replace("  ", " "), "{url}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        let mut v = serde_json::json!({
            "shards": [{"name": "a", "url": "host=h password=hunter2", "replicas": ["postgresql://u:hunter2@r/db"]}],
            "kafka": {"properties": {"sasl.password": "hunter2", "sasl.username": "u"}, "password_file": "/run/secrets/k"},
            "database": {"direct_urls": {"a": "host=h password=hunter2"}},
        });
        redact_config(&mut v);
        let text = v.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("/run/secrets/k") && text.contains("\"u\""),
            "{text}"
        );
    }

    #[test]
    fn passwords_come_from_files_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let src = PasswordSource {
            password_file: Some(f.clone()),
            password_env: None,
        };
        assert_eq!(src.resolve("k").unwrap().unwrap().expose(), "from-file");
        let missing = PasswordSource {
            password_file: Some(dir.path().join("nope")),
            password_env: None,
        };
        let e = missing
            .resolve("database.credentials.ingest")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database.credentials.ingest.password_file"),
            "{e}"
        );
        let unset = PasswordSource {
            password_file: None,
            password_env: Some("VITALSINK_TEST_SURELY_UNSET_PW".into()),
        };
        let e = unset.resolve("kafka").unwrap_err().to_string();
        assert!(e.contains("kafka.password_env"), "{e}");
    }
}
