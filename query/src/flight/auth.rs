//! Who may query: Flight SQL's basic-then-bearer authentication, as ADBC and the Flight SQL
//! JDBC driver do it (`username`/`password` options). The client's `Handshake` carries
//! `authorization: Basic base64(user:password)`; the answer carries `authorization: Bearer
//! TOKEN`, a random token of this server process (256 bits), which every later call sends.
//! Clients that send the basic header on every call are accepted too.
//!
//! Without a configured password the server accepts every caller (it then binds 127.0.0.1
//! by default, and the shards' own roles still apply: the query role can only read).

use base64::Engine as _;
use tonic::{Request, Status};

use crate::secret_eq;
use vitalsink_common::secret::Secret;

/// The accounts and the token of one server process.
#[derive(Clone)]
pub struct Auth {
    user: String,
    password: Option<Secret>,
    token: Secret,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("user", &self.user).finish()
    }
}

impl Auth {
    /// `user` with `password`; `None` accepts every caller.
    pub fn new(user: String, password: Option<Secret>) -> Self {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Self {
            user,
            password,
            token: Secret::new(token),
        }
    }

    /// Whether a password is required.
    pub fn required(&self) -> bool {
        self.password.is_some()
    }

    fn basic_ok(&self, value: &str) -> bool {
        let Some(pw) = &self.password else {
            return true;
        };
        let Some(b64) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        match text.split_once(':') {
            Some((u, p)) => secret_eq(u, &self.user) & secret_eq(p, pw.expose()),
            None => false,
        }
    }

    /// `Handshake`: checks the basic credentials and returns the header value
    /// `Bearer TOKEN` to send back.
    ///
    /// # Errors
    /// `Unauthenticated` (without saying which part was wrong).
    pub fn handshake<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let value = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !self.basic_ok(value) {
            return Err(Status::unauthenticated("invalid user or password"));
        }
        Ok(format!("Bearer {}", self.token.expose()))
    }

    /// The interceptor of every call: a valid bearer token or valid basic credentials.
    ///
    /// # Errors
    /// `Unauthenticated` when neither is present and valid.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.required() {
            return Ok(req);
        }
        let value = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ok = match value.strip_prefix("Bearer ") {
            Some(t) => secret_eq(t.trim(), self.token.expose()),
            None => self.basic_ok(value),
        };
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "authentication required: connect with the username and password of the query server",
            ))
        }
    }
}
