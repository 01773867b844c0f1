//! Percent-decoding of query strings and `application/x-www-form-urlencoded`
//! bodies (`+` is a space).
//!
//! Owns: splitting `a=b&c=d` into pairs and decoding each side. Pure
//! functions over borrowed input; a decoded string borrows the input when
//! there is nothing to decode (no `+`, no `%`, valid UTF-8) and allocates
//! only when an escape forces it.
//!
//! Rules (those of the WHATWG URL standard's `application/x-www-form-urlencoded`
//! parser, which Go's and Python's query parsers also follow):
//! - pairs are separated by `&`; empty pairs (`a=1&&b=2`) are skipped;
//! - the first `=` separates name and value; a pair without `=` has the
//!   value `""`;
//! - `+` decodes to a space, `%XX` (hex, either case) to that byte; a `%`
//!   not followed by two hex digits is kept literally;
//! - the decoded bytes are read as UTF-8, invalid sequences replaced by
//!   U+FFFD.

use std::borrow::Cow;

/// Iterator over the decoded `(name, value)` pairs of a query string or
/// form body.
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    rest: &'a [u8],
}

/// The pairs of a query string (the target after `?`).
pub fn pairs(query: &str) -> Pairs<'_> {
    Pairs {
        rest: query.as_bytes(),
    }
}

/// The pairs of a form body, which may hold any bytes.
pub fn pairs_bytes(body: &[u8]) -> Pairs<'_> {
    Pairs { rest: body }
}

impl<'a> Pairs<'a> {
    /// The next non-empty raw pair, undecoded.
    fn next_raw(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (pair, rest) = match memchr::memchr(b'&', self.rest) {
                Some(at) => (&self.rest[..at], &self.rest[at + 1..]),
                None => (self.rest, &b""[..]),
            };
            self.rest = rest;
            if pair.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', pair) {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            });
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw()
            .map(|(name, value)| (decode_bytes(name), decode_bytes(value)))
    }
}

/// The decoded value of the first pair named `key` (compared after
/// decoding), if any.
pub fn get<'a>(query: &'a str, key: &str) -> Option<Cow<'a, str>> {
    get_bytes(query.as_bytes(), key)
}

/// [`get`] over a form body.
pub fn get_bytes<'a>(body: &'a [u8], key: &str) -> Option<Cow<'a, str>> {
    let mut raw = pairs_bytes(body);
    while let Some((name, value)) = raw.next_raw() {
        // Only names with an escape need decoding before the comparison.
        let matches = if needs_decoding(name) {
            decode_bytes(name) == key
        } else {
            name == key.as_bytes()
        };
        if matches {
            return Some(decode_bytes(value));
        }
    }
    None
}

/// Decodes one component (`+`, `%XX`, lossy UTF-8).
pub fn decode(component: &str) -> Cow<'_, str> {
    decode_bytes(component.as_bytes())
}

/// [`decode`] over bytes.
pub fn decode_bytes(component: &[u8]) -> Cow<'_, str> {
    if !needs_decoding(component) {
        return String::from_utf8_lossy(component);
    }
    let mut decoded = Vec::with_capacity(component.len());
    let mut i = 0;
    while i < component.len() {
        let b = component[i];
        match b {
            b'+' => decoded.push(b' '),
            b'%' => match (
                component.get(i + 1).and_then(|&h| hex_value(h)),
                component.get(i + 2).and_then(|&l| hex_value(l)),
            ) {
                (Some(high), Some(low)) => {
                    decoded.push(high << 4 | low);
                    i += 2;
                }
                _ => decoded.push(b'%'),
            },
            _ => decoded.push(b),
        }
        i += 1;
    }
    match String::from_utf8(decoded) {
        Ok(text) => Cow::Owned(text),
        Err(invalid) => Cow::Owned(String::from_utf8_lossy(invalid.as_bytes()).into_owned()),
    }
}

fn needs_decoding(component: &[u8]) -> bool {
    memchr::memchr2(b'+', b'%', component).is_some()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: each decoding rule holds, and plain input is borrowed.
    /// Method: table of components and their decoded form.
    #[test]
    fn decoding_rules() {
        let cases: &[(&[u8], &str, bool)] = &[
            (b"plain", "plain", true),
            (b"", "", true),
            (b"a+b", "a b", false),
            (b"%41%62%2b", "Ab+", false),
            (b"%e2%82%ac%E2%82%AC", "\u{20ac}\u{20ac}", false),
            (b"100%", "100%", false),
            (b"%4", "%4", false),
            (b"%zz%4g", "%zz%4g", false),
            (b"%%41", "%A", false),
            (b"%ff", "\u{fffd}", false),
            (b"\xff", "\u{fffd}", false),
            (b"SELECT+*+FROM+%22cpu%22", "SELECT * FROM \"cpu\"", false),
            (b"caf\xc3\xa9", "caf\u{e9}", true),
        ];
        for (input, expected, borrowed) in cases {
            let got = decode_bytes(input);
            assert_eq!(got, *expected, "{input:?}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                *borrowed,
                "{input:?} borrowed"
            );
        }
    }

    /// Goal: pairs split on `&` and the first `=`, skip empty pairs, and
    /// decode both sides. Method: compare the collected pairs.
    #[test]
    fn pair_splitting() {
        let got: Vec<(String, String)> = pairs("db=my+db&&q=SELECT%20x&flag&=v&k=a=b&")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let expected = [
            ("db", "my db"),
            ("q", "SELECT x"),
            ("flag", ""),
            ("", "v"),
            ("k", "a=b"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(pairs("").count(), 0);
        assert_eq!(pairs("&&&").count(), 0);
        assert_eq!(
            pairs_bytes(b"q=SHOW+DATABASES").next().map(|(_, v)| v),
            Some("SHOW DATABASES".into())
        );
    }

    /// Goal: `get` returns the first occurrence, compares decoded names,
    /// and distinguishes a missing key from an empty value. Method: direct calls.
    #[test]
    fn get_first_occurrence() {
        let query = "db=a&precision=ms&db=b&m%79key=1&empty=&bare";
        assert_eq!(get(query, "db").as_deref(), Some("a"));
        assert_eq!(get(query, "precision").as_deref(), Some("ms"));
        assert_eq!(get(query, "mykey").as_deref(), Some("1"));
        assert_eq!(get(query, "empty").as_deref(), Some(""));
        assert_eq!(get(query, "bare").as_deref(), Some(""));
        assert_eq!(get(query, "rp"), None);
        assert_eq!(get(query, "d"), None);
        assert!(matches!(get(query, "db"), Some(Cow::Borrowed("a"))));
        assert_eq!(
            get_bytes(b"q=SHOW+MEASUREMENTS&db=x", "q").as_deref(),
            Some("SHOW MEASUREMENTS")
        );
    }
}
