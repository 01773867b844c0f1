//! Hand-written JSON output matching Go's `encoding/json` byte for byte.
//!
//! Why hand-written rather than simd-json's serializer: InfluxDB's answers
//! are Go `encoding/json` output, and the golden tests compare bytes. Go
//! escapes `<`, `>`, `&`, U+2028 and U+2029, prints floats with the shortest
//! round-trip digits switching to exponent form outside [1e-6, 1e21), and
//! keeps integers exact; controlling each of these is simpler with a small
//! writer into a reused `Vec<u8>` than by configuring a general serializer.

use std::io::Write;

/// Appends a JSON string literal, escaped like Go's `encoding/json`.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let code = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize]);
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Appends a float like Go's `encoding/json` (`null` for NaN and ±Inf,
/// which Go refuses to encode).
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let abs = value.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        out.extend_from_slice(mantissa.as_bytes());
        out.push(b'e');
        match exponent.strip_prefix('-') {
            Some(digits) => {
                out.push(b'-');
                out.extend_from_slice(digits.as_bytes());
            }
            None => {
                out.push(b'+');
                if exponent.len() < 2 {
                    out.push(b'0');
                }
                out.extend_from_slice(exponent.as_bytes());
            }
        }
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{value}");
    }
}

pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    let _ = write!(out, "{value}");
}

pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let _ = write!(out, "{value}");
}

/// Re-indents compact JSON like Go's `json.MarshalIndent(v, "", "    ")`.
pub fn indent(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        for _ in 0..depth {
            out.extend_from_slice(b"    ");
        }
    };
    let mut i = 0;
    while i < compact.len() {
        let b = compact[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                if compact.get(i + 1) == Some(&close) {
                    out.push(b);
                    out.push(close);
                    i += 2;
                    continue;
                }
                out.push(b);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => {
                out.extend_from_slice(b": ");
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(value: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, value);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Goal: floats print like Go's encoding/json. Method: values on both
    /// sides of the exponent switch points, negative zero, integers.
    #[test]
    fn floats_print_like_go() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(86.875), "86.875");
        assert_eq!(float(-0.0015), "-0.0015");
        assert_eq!(float(1e20), "100000000000000000000");
        assert_eq!(float(1e21), "1e+21");
        assert_eq!(float(1.5e300), "1.5e+300");
        assert_eq!(float(0.000001), "0.000001");
        assert_eq!(float(1e-7), "1e-7");
        assert_eq!(float(1.25e-10), "1.25e-10");
        assert_eq!(float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float(f64::NAN), "null");
    }

    /// Goal: strings escape like Go (HTML-safe). Method: each special class.
    #[test]
    fn strings_escape_like_go() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd<>&\u{1}é\u{2028}");
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            r#""a\"b\\c\nd\u003c\u003e\u0026\u0001é\u2028""#
        );
    }

    /// Goal: pretty output matches Go's MarshalIndent. Method: nested
    /// objects, empty array, a string holding structural characters.
    #[test]
    fn indent_matches_go() {
        let compact = br#"{"a":[1,{"b":"x,{}:"}],"c":[]}"#;
        let expected = "{\n    \"a\": [\n        1,\n        {\n            \"b\": \"x,{}:\"\n        }\n    ],\n    \"c\": []\n}";
        assert_eq!(
            String::from_utf8(indent(compact)).unwrap_or_default(),
            expected
        );
    }
}
