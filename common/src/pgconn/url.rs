//! The TLS parameters of a connection string (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
//! libpq's names, in URL or key-value form), which tokio-postgres does not parse beyond three
//! `sslmode` values: split off before the rest is handed to tokio-postgres.

/// TLS parameters a connection string carries in libpq's names.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct UrlTls {
    pub(super) mode: Option<String>,
    pub(super) root: Option<String>,
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

impl UrlTls {
    fn take(&mut self, k: &str, v: String) -> bool {
        let slot = match k {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return false,
        };
        *slot = Some(v);
        true
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits libpq's TLS parameters (which tokio-postgres does not know beyond three `sslmode`
/// values) off a connection string, URL or key-value form; returns the rest and them.
pub(super) fn split_tls(url: &str) -> (String, UrlTls) {
    let mut tls = UrlTls::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), tls);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                !tls.take(k, percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, tls);
    }
    // Key-value form: `key = value` pairs, values optionally single-quoted with `\` escapes.
    let mut kept: Vec<String> = Vec::new();
    let mut chars = url.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut raw = String::new();
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'\'') {
                raw.push('\'');
                chars.next();
                while let Some(c) = chars.next() {
                    raw.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                raw.push(n);
                                value.push(n);
                            }
                        }
                        '\'' => break,
                        _ => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    raw.push(c);
                    value.push(c);
                    chars.next();
                }
            }
        }
        if !tls.take(&key, value) {
            kept.push(format!("{key}={raw}"));
        }
    }
    (kept.join(" "), tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_split_off_both_forms() {
        let (rest, t) = split_tls(
            "postgresql://u@localhost:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(rest, "postgresql://u@localhost:5432/db?application_name=x");
        assert_eq!(t.mode.as_deref(), Some("verify-full"));
        assert_eq!(t.root.as_deref(), Some("/etc/ca.pem"));
        let (rest, t) = split_tls(
            "host=localhost port=5432 sslmode = verify-ca sslrootcert='/a b/ca.pem' password='x y'",
        );
        assert_eq!(rest, "host=localhost port=5432 password='x y'");
        assert_eq!(t.mode.as_deref(), Some("verify-ca"));
        assert_eq!(t.root.as_deref(), Some("/a b/ca.pem"));
        let (rest, t) = split_tls("postgresql://h/db");
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(t, UrlTls::default());
    }
}
