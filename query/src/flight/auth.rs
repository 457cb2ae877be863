//! Who may query: Flight SQL's basic-then-bearer authentication, as ADBC and the Flight SQL
//! JDBC driver do it (`username`/`password` options). The client's `Handshake` carries
//! `authorization: Basic base64(user:password)`; the answer carries `authorization: Bearer
//! TOKEN`, which every later call sends. Clients that send the basic header on every call are
//! accepted too (each call then costs one Argon2 verification).
//!
//! Accounts come from the accounts file ([`super::users`], `--users-file`) and/or the one
//! account of `--flight-user` with `--flight-password-file` (a plain secret, as before the
//! accounts file). Without either, every caller is accepted as `anonymous` (the server then
//! binds 127.0.0.1 by default, and the shards' own roles still apply: the query role can only
//! read).
//!
//! Tokens are stateless, so memory does not grow with logins: `v1.<user, base64url>.<expiry,
//! Unix seconds>.<HMAC-SHA-256 of both under a random key of this process, hex>`, valid for
//! `--session-ttl` and only while the user still has an account. The interceptor
//! ([`Auth::check`]) puts the caller's [`User`] into the request's extensions, where every
//! handler reads it for the access record.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::{Request, Status};

use super::users::Accounts;
use crate::secret_eq;
use vitalsink_common::secret::Secret;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The name recorded for callers of a server without accounts.
pub const ANONYMOUS: &str = "anonymous";

/// Default of `--session-ttl`: how long a bearer token is valid, 12 h (a working day of an
/// analyst's notebook; ADBC logs in again on a new connection).
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);

/// The authenticated caller of a request (in its extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// Who may connect, and the token key of one server process.
#[derive(Clone)]
pub struct Auth {
    file: Option<Arc<Accounts>>,
    single: Option<(String, Secret)>,
    key: Secret,
    ttl: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("file", &self.file)
            .field("single", &self.single.as_ref().map(|(u, _)| u))
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header<T>(req: &Request<T>) -> &str {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

impl Auth {
    /// The accounts of `file` and the one `single` account (`user`, password); neither
    /// accepts every caller. Tokens live `ttl`.
    pub fn new(file: Option<Accounts>, single: Option<(String, Secret)>, ttl: Duration) -> Self {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        Self {
            file: file.map(Arc::new),
            single,
            key: Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            ttl,
        }
    }

    /// Whether a password is required.
    pub fn required(&self) -> bool {
        self.file.is_some() || self.single.is_some()
    }

    fn verify(&self, user: &str, password: &str) -> bool {
        if let Some((u, p)) = &self.single {
            if secret_eq(user, u) & secret_eq(password, p.expose()) {
                return true;
            }
        }
        self.file.as_ref().is_some_and(|f| f.verify(user, password))
    }

    fn exists(&self, user: &str) -> bool {
        self.single.as_ref().is_some_and(|(u, _)| u == user)
            || self.file.as_ref().is_some_and(|f| f.exists(user))
    }

    /// The user of a valid `Basic` header value.
    fn basic(&self, value: &str) -> Option<String> {
        let b64 = value.strip_prefix("Basic ")?;
        // Padded or not: ADBC's Go driver sends `user:password` unpadded (RawStdEncoding),
        // pyarrow and JDBC padded; strict decoding refused every password whose
        // `user:password` is not a multiple of 3 bytes long from ADBC.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let raw = lenient.decode(b64.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        let ok = self.verify(u, p);
        metrics::counter!("vitalsink_query_logins_total", "outcome" => if ok { "ok" } else { "refused" })
            .increment(1);
        if ok {
            Some(u.to_string())
        } else {
            tracing::warn!(user = %u, "login refused: wrong user or password");
            None
        }
    }

    fn mac(&self, user: &str, expiry: u64) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(self.key.expose().as_bytes()).ok()?;
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(expiry.to_string().as_bytes());
        Some(mac)
    }

    /// A bearer token for `user`, valid for the TTL.
    fn token(&self, user: &str) -> Result<String, Status> {
        let expiry = unix_now() + self.ttl.as_secs();
        let mac = self
            .mac(user, expiry)
            .ok_or_else(|| Status::internal("token key"))?;
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user);
        Ok(format!("v1.{name}.{expiry}.{sig}"))
    }

    /// The user of a valid, unexpired token whose user still has an account.
    fn bearer(&self, token: &str) -> Option<String> {
        let mut parts = token.trim().split('.');
        let (Some("v1"), Some(name), Some(expiry), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let user = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(name)
                .ok()?,
        )
        .ok()?;
        let expiry: u64 = expiry.parse().ok()?;
        let sig: Vec<u8> = (0..sig.len())
            .step_by(2)
            .map(|i| {
                sig.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()?;
        self.mac(&user, expiry)?.verify_slice(&sig).ok()?;
        (expiry > unix_now() && (!self.required() || self.exists(&user))).then_some(user)
    }

    /// The interceptor of every call: a valid bearer token or valid basic credentials; puts
    /// the caller's [`User`] into the request's extensions.
    ///
    /// # Errors
    /// `Unauthenticated` when neither is present and valid (without saying which part was
    /// wrong).
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = header(&req);
        let user = match value.strip_prefix("Bearer ") {
            Some(t) => self.bearer(t),
            None if !self.required() => Some(ANONYMOUS.to_string()),
            None => self.basic(value),
        };
        match user {
            Some(u) => {
                req.extensions_mut().insert(User(u));
                Ok(req)
            }
            None if !self.required() => {
                req.extensions_mut().insert(User(ANONYMOUS.to_string()));
                Ok(req)
            }
            None => {
                tracing::debug!(
                    scheme = value.split(' ').next().unwrap_or_default(),
                    len = value.len(),
                    "call refused"
                );
                Err(Status::unauthenticated(
                    "invalid user or password: connect with your account of the query server",
                ))
            }
        }
    }

    /// `Handshake`: the header value `Bearer TOKEN` to send back to the caller the
    /// interceptor let in.
    ///
    /// # Errors
    /// `Unauthenticated` when the interceptor did not run (never on this server).
    pub fn handshake<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let user = req
            .extensions()
            .get::<User>()
            .ok_or_else(|| Status::unauthenticated("invalid user or password"))?;
        Ok(format!("Bearer {}", self.token(&user.0)?))
    }
}

/// The caller of `req` ([`ANONYMOUS`] when the interceptor recorded none).
pub fn user_of<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<User>()
        .map_or_else(|| ANONYMOUS.to_string(), |u| u.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    fn call(auth: &Auth, value: &str) -> Result<String, Status> {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        auth.check(req).map(|r| user_of(&r))
    }

    #[test]
    fn tokens_name_their_user_and_cannot_be_forged() {
        let auth = Auth::new(
            None,
            Some(("analyst".into(), Secret::new("pw"))),
            Duration::from_secs(60),
        );
        assert_eq!(call(&auth, &basic("analyst", "pw")).unwrap(), "analyst");
        assert!(call(&auth, &basic("analyst", "wrong")).is_err());
        // Without padding, as ADBC's Go driver sends it ("analyst:pw" is 10 bytes).
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.encode("analyst:pw");
        assert_eq!(call(&auth, &format!("Basic {raw}")).unwrap(), "analyst");
        let t = auth.token("analyst").unwrap();
        assert_eq!(call(&auth, &format!("Bearer {t}")).unwrap(), "analyst");
        // Another user's name under this signature, another process's token, an expired one.
        let forged = t.replacen(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("analyst"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("admin"),
            1,
        );
        assert!(call(&auth, &format!("Bearer {forged}")).is_err());
        let other = Auth::new(
            None,
            Some(("analyst".into(), Secret::new("pw"))),
            Duration::ZERO,
        );
        assert!(call(
            &auth,
            &format!("Bearer {}", other.token("analyst").unwrap())
        )
        .is_err());
        assert!(call(
            &other,
            &format!("Bearer {}", other.token("analyst").unwrap())
        )
        .is_err());
        let open = Auth::new(None, None, DEFAULT_TTL);
        assert_eq!(call(&open, "").unwrap(), ANONYMOUS);
    }
}
