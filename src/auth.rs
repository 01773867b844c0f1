//! Credentials: where a token comes from, whether it is known (compared
//! in constant time), and what it may do. Knows nothing of endpoints; the
//! caller says which credential forms apply and which access it needs.
//!
//! Accepted forms (the InfluxDB 3 set): `Authorization: Token T`,
//! `Authorization: Bearer T`, `Authorization: Basic base64(user:T)` (the
//! user part is ignored), and — where the caller allows it (`/write`,
//! `/query`) — the `p` query parameter. A usable header wins over `p`.
//!
//! Tokens are stored only as SHA-256 hashes. A grant names databases or
//! `*`; a grant on `db` also covers `db/<rp>` (the database a v1 write
//! with a retention policy lands in).

use std::borrow::Cow;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Write,
    Read,
}

/// Why a request is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No credential at all, or one that is malformed → 401.
    Missing,
    /// A credential that matches no token → 401.
    Unknown,
    /// A known token without the needed access to the database → 403.
    Forbidden,
}

#[derive(Clone, Debug)]
struct Grant {
    all: bool,
    databases: Vec<String>,
}

impl Grant {
    fn new(list: &[String]) -> Grant {
        Grant {
            all: list.iter().any(|d| d == "*"),
            databases: list.iter().filter(|d| *d != "*").cloned().collect(),
        }
    }

    fn covers(&self, database: &str) -> bool {
        self.all
            || self.databases.iter().any(|granted| {
                database == granted
                    || (database.len() > granted.len()
                        && database.starts_with(granted.as_str())
                        && database.as_bytes()[granted.len()] == b'/')
            })
    }
}

#[derive(Clone, Debug)]
struct Token {
    hash: [u8; 32],
    write: Grant,
    read: Grant,
}

/// The configured tokens, built once at start.
#[derive(Clone, Debug)]
pub struct Authorizer {
    enabled: bool,
    tokens: Vec<Token>,
}

/// A token as found in the request (borrowed when it can be).
pub type Secret<'a> = Cow<'a, [u8]>;

/// Finds the token in the request: the header if usable, else `p`.
pub fn extract<'a>(authorization: Option<&'a [u8]>, p: Option<Cow<'a, str>>) -> Option<Secret<'a>> {
    if let Some(header) = authorization.and_then(from_header) {
        return Some(header);
    }
    match p {
        Some(Cow::Borrowed(text)) if !text.is_empty() => Some(Cow::Borrowed(text.as_bytes())),
        Some(Cow::Owned(text)) if !text.is_empty() => Some(Cow::Owned(text.into_bytes())),
        _ => None,
    }
}

fn from_header(value: &[u8]) -> Option<Secret<'_>> {
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let rest = rest.trim_ascii();
    if rest.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case(b"token") || scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Cow::Borrowed(rest));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let password = decoded[colon + 1..].to_vec();
        return (!password.is_empty()).then_some(Cow::Owned(password));
    }
    None
}

/// Hex SHA-256 of a token, as written in the config.
pub fn hash_hex(token: &[u8]) -> String {
    Sha256::digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Constant-time equality of two hashes.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

impl Authorizer {
    /// Builds from config (hashes were validated by `Config::validate`).
    pub fn new(config: &AuthConfig) -> Authorizer {
        Authorizer {
            enabled: config.enabled,
            tokens: config
                .tokens
                .iter()
                .filter_map(|t| {
                    Some(Token {
                        hash: parse_hex(&t.sha256)?,
                        write: Grant::new(&t.write),
                        read: Grant::new(&t.read),
                    })
                })
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Finds the token's entry; every configured hash is compared, so the
    /// time taken does not depend on which one matched.
    fn lookup(&self, secret: &[u8]) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for token in &self.tokens {
            if same_hash(&token.hash, &digest) && found.is_none() {
                found = Some(token);
            }
        }
        found
    }

    /// Allows or refuses `access` to `database`. With auth off, allows.
    pub fn check(
        &self,
        secret: Option<&[u8]>,
        access: Access,
        database: &str,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let token = self
            .lookup(secret.ok_or(AuthError::Missing)?)
            .ok_or(AuthError::Unknown)?;
        let grant = match access {
            Access::Write => &token.write,
            Access::Read => &token.read,
        };
        if grant.covers(database) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// Whether the secret is any known token (for `/metrics` and
    /// statements that touch no database such as `SHOW DATABASES`).
    pub fn check_known(&self, secret: Option<&[u8]>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        self.lookup(secret.ok_or(AuthError::Missing)?)
            .map(|_| ())
            .ok_or(AuthError::Unknown)
    }
}

/// A new random token (32 bytes from the kernel, URL-safe base64).
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most `len` bytes into the live buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += n as usize;
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn authorizer() -> Authorizer {
        Authorizer::new(&AuthConfig {
            enabled: true,
            tokens: vec![
                TokenConfig {
                    name: "writer".into(),
                    sha256: hash_hex(b"w-secret"),
                    write: vec!["telegraf".into()],
                    read: vec![],
                },
                TokenConfig {
                    name: "admin".into(),
                    sha256: hash_hex(b"a-secret"),
                    write: vec!["*".into()],
                    read: vec!["*".into()],
                },
            ],
        })
    }

    /// Goal: every credential form yields the token. Method: one request
    /// shape per form.
    #[test]
    fn every_credential_form_is_extracted() {
        assert_eq!(
            extract(Some(b"Token abc"), None).as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            extract(Some(b"Bearer abc"), None).as_deref(),
            Some(&b"abc"[..])
        );
        // base64("user:abc") = dXNlcjphYmM=
        assert_eq!(
            extract(Some(b"Basic dXNlcjphYmM="), None).as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            extract(None, Some(Cow::Borrowed("abc"))).as_deref(),
            Some(&b"abc"[..])
        );
        // A usable header wins over p.
        assert_eq!(
            extract(Some(b"Token hdr"), Some(Cow::Borrowed("param"))).as_deref(),
            Some(&b"hdr"[..])
        );
        // A malformed header falls back to p; nothing usable is None.
        assert_eq!(
            extract(Some(b"Digest x"), Some(Cow::Borrowed("param"))).as_deref(),
            Some(&b"param"[..])
        );
        assert_eq!(extract(Some(b"Token "), None), None);
    }

    /// Goal: missing and unknown credentials are 401-class, a known token
    /// without the grant is 403-class, grants cover `db/rp`. Method: check
    /// each combination.
    #[test]
    fn permissions_are_enforced() {
        let auth = authorizer();
        assert_eq!(
            auth.check(None, Access::Write, "telegraf"),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check(Some(b"nope"), Access::Write, "telegraf"),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            auth.check(Some(b"w-secret"), Access::Write, "telegraf"),
            Ok(())
        );
        assert_eq!(
            auth.check(Some(b"w-secret"), Access::Write, "telegraf/autogen2"),
            Ok(())
        );
        assert_eq!(
            auth.check(Some(b"w-secret"), Access::Write, "telegraf2"),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.check(Some(b"w-secret"), Access::Read, "telegraf"),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.check(Some(b"a-secret"), Access::Read, "anything"),
            Ok(())
        );
    }

    /// Goal: with auth off everything is allowed. Method: no tokens, no secret.
    #[test]
    fn disabled_allows_everything() {
        let auth = Authorizer::new(&AuthConfig::default());
        assert_eq!(auth.check(None, Access::Write, "x"), Ok(()));
    }

    /// Goal: generated tokens are random and long. Method: two differ, length.
    #[test]
    fn generated_tokens_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
