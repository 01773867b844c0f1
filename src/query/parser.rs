//! InfluxQL lexer and recursive-descent parser (the subset of issue 6).
//!
//! Pure function over the query text: [`parse_query`] returns statements or
//! a [`ParseError`] whose `Display` matches InfluxDB 1.x's wording
//! (`found X, expected Y at line L, char C`), so `/query` can answer
//! `error parsing query: …` like the original.
//!
//! The lexer is driven by the parser: a `/` is a division or the start of a
//! regex depending on where the parser is (after `=~`, `!~`, `FROM`, …),
//! exactly as in InfluxDB's parser.

use std::fmt;

use regex::Regex;

use super::ast::*;

/// Nesting depth limit of expressions: deeper input is an error, never a
/// stack overflow.
const DEPTH_MAX: usize = 256;

/// A parse error with its position (1-based line and char).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub line: usize,
    pub char: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: InfluxDB prints some errors without a position.
        if self.line == 0 {
            return f.write_str(&self.message);
        }
        write!(
            f,
            "{} at line {}, char {}",
            self.message, self.line, self.char
        )
    }
}

impl std::error::Error for ParseError {}

/// An error InfluxDB reports without a position.
fn unpositioned(message: &str) -> ParseError {
    ParseError {
        message: message.to_string(),
        line: 0,
        char: 0,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    QuotedIdent(String),
    Str(String),
    Integer(i64),
    Number(f64),
    Duration(i64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Semicolon,
    Dot,
    DoubleColon,
    Eof,
    /// Unlexable input.
    Bad(String),
    /// Unterminated string or bad escape; the text without the quote.
    BadString(String),
    /// A number with an unknown duration unit (`1x`).
    BadDuration(String),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// The text as written, for error messages.
    text: String,
    start: usize,
}

/// Keywords that end an expression or a list, never identifiers when bare.
const RESERVED: &[&str] = &[
    "ALL",
    "ALTER",
    "AND",
    "AS",
    "ASC",
    "BEGIN",
    "BY",
    "CREATE",
    "CONTINUOUS",
    "DATABASE",
    "DATABASES",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DESTINATIONS",
    "DIAGNOSTICS",
    "DISTINCT",
    "DROP",
    "DURATION",
    "END",
    "EVERY",
    "EXPLAIN",
    "FIELD",
    "FOR",
    "FROM",
    "GRANT",
    "GRANTS",
    "GROUP",
    "GROUPS",
    "IN",
    "INF",
    "INSERT",
    "INTO",
    "KEY",
    "KEYS",
    "KILL",
    "LIMIT",
    "MEASUREMENT",
    "MEASUREMENTS",
    "NAME",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "PASSWORD",
    "POLICIES",
    "POLICY",
    "PRIVILEGES",
    "QUERIES",
    "QUERY",
    "READ",
    "REPLICATION",
    "RESAMPLE",
    "RETENTION",
    "REVOKE",
    "SELECT",
    "SERIES",
    "SET",
    "SHARD",
    "SHARDS",
    "SLIMIT",
    "SOFFSET",
    "STATS",
    "SUBSCRIPTION",
    "SUBSCRIPTIONS",
    "TAG",
    "TO",
    "USER",
    "USERS",
    "VALUES",
    "WHERE",
    "WITH",
    "WRITE",
];

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Parses `;`-separated statements.
pub fn parse_query(text: &str) -> Result<Vec<Statement>, ParseError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    let mut statements = Vec::new();
    loop {
        let token = parser.peek();
        match token.tok {
            Tok::Eof => break,
            Tok::Semicolon => {
                parser.next();
                continue;
            }
            _ => {}
        }
        statements.push(parser.statement()?);
        let token = parser.next();
        match token.tok {
            Tok::Semicolon => {}
            Tok::Eof => break,
            _ => return Err(parser.unexpected(&token, &[";"])),
        }
    }
    Ok(statements)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn skip_space(&mut self) {
        loop {
            while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
                self.pos += 1;
            }
            // `-- comment` to end of line.
            if self.pos + 1 < self.chars.len()
                && self.chars[self.pos] == '-'
                && self.chars[self.pos + 1] == '-'
            {
                while self.pos < self.chars.len() && self.chars[self.pos] != '\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars[start..end].iter().collect()
    }

    /// Lexes the token at the cursor without consuming it.
    fn peek(&mut self) -> Token {
        let saved = self.pos;
        let token = self.next();
        self.pos = saved;
        token
    }

    fn next(&mut self) -> Token {
        self.skip_space();
        let start = self.pos;
        let tok = self.lex();
        let text = match &tok {
            Tok::Eof => "EOF".to_string(),
            Tok::Bad(text) | Tok::BadString(text) | Tok::BadDuration(text) => text.clone(),
            _ => self.text(start, self.pos),
        };
        Token { tok, text, start }
    }

    fn lex(&mut self) -> Tok {
        let Some(&c) = self.chars.get(self.pos) else {
            return Tok::Eof;
        };
        let peek2 = self.chars.get(self.pos + 1).copied();
        let single = |p: &mut Parser, tok: Tok, len: usize| {
            p.pos += len;
            tok
        };
        match c {
            '(' => single(self, Tok::LParen, 1),
            ')' => single(self, Tok::RParen, 1),
            ',' => single(self, Tok::Comma, 1),
            ';' => single(self, Tok::Semicolon, 1),
            '+' => single(self, Tok::Op("+"), 1),
            '-' => single(self, Tok::Op("-"), 1),
            '*' => single(self, Tok::Op("*"), 1),
            '/' => single(self, Tok::Op("/"), 1),
            '%' => single(self, Tok::Op("%"), 1),
            '=' if peek2 == Some('~') => single(self, Tok::Op("=~"), 2),
            '=' => single(self, Tok::Op("="), 1),
            '!' if peek2 == Some('=') => single(self, Tok::Op("!="), 2),
            '!' if peek2 == Some('~') => single(self, Tok::Op("!~"), 2),
            '<' if peek2 == Some('>') => single(self, Tok::Op("!="), 2),
            '<' if peek2 == Some('=') => single(self, Tok::Op("<="), 2),
            '<' => single(self, Tok::Op("<"), 1),
            '>' if peek2 == Some('=') => single(self, Tok::Op(">="), 2),
            '>' => single(self, Tok::Op(">"), 1),
            ':' if peek2 == Some(':') => single(self, Tok::DoubleColon, 2),
            '.' if !peek2.is_some_and(|d| d.is_ascii_digit()) => single(self, Tok::Dot, 1),
            '"' => match self.lex_quoted('"') {
                Ok(s) => Tok::QuotedIdent(s),
                Err(bad) => Tok::BadString(bad),
            },
            '\'' => match self.lex_quoted('\'') {
                Ok(s) => Tok::Str(s),
                Err(bad) => Tok::BadString(bad),
            },
            c if c.is_ascii_digit() || c == '.' => self.lex_number(),
            c if is_ident_start(c) => {
                let start = self.pos;
                while self.pos < self.chars.len() && is_ident_char(self.chars[self.pos]) {
                    self.pos += 1;
                }
                Tok::Ident(self.text(start, self.pos))
            }
            other => {
                self.pos += 1;
                Tok::Bad(other.to_string())
            }
        }
    }

    fn lex_quoted(&mut self, quote: char) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return Err(self.text(start + 1, self.pos));
            };
            self.pos += 1;
            if c == quote {
                return Ok(out);
            }
            if c == '\n' {
                return Err(self.text(start + 1, self.pos - 1));
            }
            if c == '\\' {
                let Some(&e) = self.chars.get(self.pos) else {
                    return Err(self.text(start + 1, self.pos));
                };
                self.pos += 1;
                match e {
                    'n' => out.push('\n'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    _ => return Err(self.text(start + 1, self.pos)),
                }
                continue;
            }
            out.push(c);
        }
    }

    fn lex_number(&mut self) -> Tok {
        let start = self.pos;
        while self.pos < self.chars.len() && self.chars[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let mut is_float = false;
        if self.pos < self.chars.len()
            && self.chars[self.pos] == '.'
            && self
                .chars
                .get(self.pos + 1)
                .is_some_and(|d| d.is_ascii_digit())
        {
            is_float = true;
            self.pos += 1;
            while self.pos < self.chars.len() && self.chars[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
        }
        let digits = self.text(start, self.pos);
        // Duration unit directly after an integer.
        if !is_float {
            let unit_start = self.pos;
            while self.pos < self.chars.len()
                && (self.chars[self.pos].is_ascii_alphabetic() || self.chars[self.pos] == 'µ')
            {
                self.pos += 1;
            }
            if self.pos > unit_start {
                // Like InfluxDB's scanner, digits and letters after the
                // first unit belong to the token: `1h30m` is one duration.
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].is_ascii_alphanumeric() || self.chars[self.pos] == 'µ')
                {
                    self.pos += 1;
                }
                let text = self.text(start, self.pos);
                return match crate::retention::parse_duration_ns(&text) {
                    Ok(ns) => Tok::Duration(ns),
                    Err(crate::retention::PeriodError::Overflow { .. }) => Tok::Bad(text),
                    Err(_) => Tok::BadDuration(text),
                };
            }
            return match digits.parse::<i64>() {
                Ok(n) => Tok::Integer(n),
                // Too large for i64: InfluxDB reads it as a float.
                Err(_) => digits.parse::<f64>().map_or(Tok::Bad(digits), Tok::Number),
            };
        }
        digits.parse::<f64>().map_or(Tok::Bad(digits), Tok::Number)
    }

    /// Lexes `/…/` at the cursor.
    fn regex(&mut self) -> Result<Regex, ParseError> {
        self.skip_space();
        let start = self.pos;
        if self.chars.get(self.pos) != Some(&'/') {
            let token = self.next();
            return Err(self.unexpected(&token, &["regex"]));
        }
        self.pos += 1;
        let mut pattern = String::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return Err(self.error_at(start, "found unterminated regex, expected regex"));
            };
            self.pos += 1;
            match c {
                '/' => break,
                '\\' if self.chars.get(self.pos) == Some(&'/') => {
                    pattern.push('/');
                    self.pos += 1;
                }
                '\\' if self.chars.get(self.pos) == Some(&'\\') => {
                    pattern.push_str("\\\\");
                    self.pos += 1;
                }
                c => pattern.push(c),
            }
        }
        Regex::new(&pattern).map_err(|e| {
            self.error_at(
                start.saturating_sub(1),
                &format!("error parsing regexp: {}", go_regex_error(&pattern, &e)),
            )
        })
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let mut line = 1;
        let mut col = 0;
        for &c in &self.chars[..offset.min(self.chars.len())] {
            if c == '\n' {
                line += 1;
                col = 0;
            } else {
                col += 1;
            }
        }
        // Positions past the end count on (InfluxDB's scanner does).
        (line, col + 1 + offset.saturating_sub(self.chars.len()))
    }

    fn error_at(&self, offset: usize, message: &str) -> ParseError {
        let (line, char) = self.position(offset);
        ParseError {
            message: message.to_string(),
            line,
            char,
        }
    }

    fn unexpected(&self, token: &Token, expected: &[&str]) -> ParseError {
        if matches!(token.tok, Tok::BadDuration(_)) {
            return unpositioned("invalid duration");
        }
        // InfluxDB reports a bad string one char before its quote.
        let offset = match token.tok {
            Tok::BadString(_) => token.start.saturating_sub(1),
            _ => token.start,
        };
        self.error_at(
            offset,
            &format!("found {}, expected {}", token.text, expected.join(", ")),
        )
    }

    fn is_keyword(token: &Token, word: &str) -> bool {
        matches!(&token.tok, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
    }

    fn peek_keyword(&mut self, word: &str) -> bool {
        let token = self.peek();
        Parser::is_keyword(&token, word)
    }

    fn accept_keyword(&mut self, word: &str) -> bool {
        if self.peek_keyword(word) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), ParseError> {
        let token = self.next();
        if Parser::is_keyword(&token, word) {
            Ok(())
        } else {
            Err(self.unexpected(&token, &[word]))
        }
    }

    fn expect(&mut self, tok: Tok, name: &str) -> Result<(), ParseError> {
        let token = self.next();
        if token.tok == tok {
            Ok(())
        } else {
            Err(self.unexpected(&token, &[name]))
        }
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::QuotedIdent(name) => Ok(name),
            Tok::Ident(name) if !is_reserved(&name) => Ok(name),
            _ => Err(self.unexpected(&token, &["identifier"])),
        }
    }

    /// Identifier or string (`WITH KEY = "k"` / `'k'`).
    fn identifier_or_string(&mut self) -> Result<String, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::QuotedIdent(name) | Tok::Str(name) => Ok(name),
            Tok::Ident(name) if !is_reserved(&name) => Ok(name),
            _ => Err(self.unexpected(&token, &["identifier", "string"])),
        }
    }

    fn unsigned(&mut self) -> Result<usize, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::Integer(n) if n >= 0 => Ok(n as usize),
            _ => Err(self.unexpected(&token, &["integer"])),
        }
    }

    fn statement(&mut self) -> Result<Statement, ParseError> {
        let token = self.next();
        let word = match &token.tok {
            Tok::Ident(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        };
        match word.as_str() {
            "SELECT" => Ok(Statement::Select(Box::new(self.select()?))),
            "SHOW" => self.show(),
            "CREATE" => {
                let token = self.next();
                if !Parser::is_keyword(&token, "DATABASE") {
                    return Err(self.unexpected(
                        &token,
                        &[
                            "CONTINUOUS",
                            "DATABASE",
                            "USER",
                            "RETENTION",
                            "SUBSCRIPTION",
                        ],
                    ));
                }
                let name = self.identifier()?;
                let retention = if self.accept_keyword("WITH") {
                    Some(self.create_retention_clauses()?)
                } else {
                    None
                };
                Ok(Statement::CreateDatabase { name, retention })
            }
            "ALTER" => {
                let token = self.next();
                if !Parser::is_keyword(&token, "RETENTION") {
                    return Err(self.unexpected(&token, &["RETENTION"]));
                }
                self.expect_keyword("POLICY")?;
                let token = self.next();
                let policy = match token.tok {
                    Tok::Ident(ref word) if word.eq_ignore_ascii_case("DEFAULT") => {
                        "default".to_string()
                    }
                    Tok::QuotedIdent(name) => name,
                    Tok::Ident(name) if !is_reserved(&name) => name,
                    _ => return Err(self.unexpected(&token, &["identifier"])),
                };
                self.expect_keyword("ON")?;
                let database = self.identifier()?;
                let clauses = self.alter_retention_clauses()?;
                Ok(Statement::AlterRetentionPolicy {
                    policy,
                    database,
                    clauses,
                })
            }
            "DROP" => {
                let token = self.next();
                if !Parser::is_keyword(&token, "DATABASE") {
                    return Err(self.unexpected(
                        &token,
                        &[
                            "CONTINUOUS",
                            "MEASUREMENT",
                            "RETENTION",
                            "SERIES",
                            "SHARD",
                            "SUBSCRIPTION",
                            "USER",
                        ],
                    ));
                }
                let name = self.identifier()?;
                Ok(Statement::DropDatabase { name })
            }
            _ => Err(self.unexpected(
                &token,
                &[
                    "SELECT", "DELETE", "SHOW", "CREATE", "DROP", "EXPLAIN", "GRANT", "REVOKE",
                    "ALTER", "SET", "KILL",
                ],
            )),
        }
    }

    /// A duration value: `30d`, `1h30m`, or `INF` (0).
    fn duration(&mut self) -> Result<i64, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::Duration(ns) => Ok(ns),
            Tok::Ident(ref word) if word.eq_ignore_ascii_case("INF") => Ok(0),
            _ => Err(self.unexpected(&token, &["duration"])),
        }
    }

    /// `REPLICATION n`'s n: 1 ≤ n ≤ 2³¹−1, as InfluxDB's `ParseInt`.
    fn replication(&mut self) -> Result<u32, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::Integer(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(n as u32),
            Tok::Integer(n) => Err(self.error_at(
                token.start,
                &format!("invalid value {n}: must be 1 <= n <= {}", i32::MAX),
            )),
            _ => Err(self.unexpected(&token, &["integer"])),
        }
    }

    /// After `CREATE DATABASE name WITH`: at least one of `DURATION d`,
    /// `REPLICATION n`, `SHARD DURATION d`, `NAME rp`, in that order.
    fn create_retention_clauses(&mut self) -> Result<RetentionClauses, ParseError> {
        let first = self.peek();
        if !["DURATION", "NAME", "REPLICATION", "SHARD"]
            .iter()
            .any(|word| Parser::is_keyword(&first, word))
        {
            self.next();
            return Err(self.unexpected(&first, &["DURATION", "NAME", "REPLICATION", "SHARD"]));
        }
        let mut clauses = RetentionClauses::default();
        if self.accept_keyword("DURATION") {
            clauses.duration_ns = Some(self.duration()?);
        }
        if self.accept_keyword("REPLICATION") {
            clauses.replication = Some(self.replication()?);
        }
        if self.accept_keyword("SHARD") {
            self.expect_keyword("DURATION")?;
            clauses.shard_duration_ns = Some(self.duration()?);
        }
        if self.accept_keyword("NAME") {
            clauses.name = Some(self.identifier()?);
        }
        Ok(clauses)
    }

    /// After `ALTER RETENTION POLICY rp ON db`: one or more of `DURATION d`,
    /// `REPLICATION n`, `SHARD DURATION d`, `DEFAULT`, in any order, each
    /// at most once.
    fn alter_retention_clauses(&mut self) -> Result<RetentionClauses, ParseError> {
        let mut clauses = RetentionClauses::default();
        let mut found: Vec<&'static str> = Vec::new();
        loop {
            let token = self.peek();
            let Some(word) = ["DURATION", "REPLICATION", "SHARD", "DEFAULT"]
                .into_iter()
                .find(|word| Parser::is_keyword(&token, word))
            else {
                if found.is_empty() {
                    self.next();
                    return Err(
                        self.unexpected(&token, &["DURATION", "REPLICATION", "SHARD", "DEFAULT"])
                    );
                }
                return Ok(clauses);
            };
            self.next();
            if found.contains(&word) {
                return Err(self.error_at(token.start, &format!("found duplicate {word} option")));
            }
            found.push(word);
            match word {
                "DURATION" => clauses.duration_ns = Some(self.duration()?),
                "REPLICATION" => clauses.replication = Some(self.replication()?),
                "SHARD" => {
                    self.expect_keyword("DURATION")?;
                    clauses.shard_duration_ns = Some(self.duration()?);
                }
                _ => clauses.default = true,
            }
        }
    }

    fn on_clause(&mut self) -> Result<Option<String>, ParseError> {
        if self.accept_keyword("ON") {
            Ok(Some(self.identifier()?))
        } else {
            Ok(None)
        }
    }

    fn optional_from(&mut self) -> Result<Vec<Source>, ParseError> {
        if self.accept_keyword("FROM") {
            self.sources()
        } else {
            Ok(Vec::new())
        }
    }

    fn where_clause(&mut self) -> Result<Option<Expr>, ParseError> {
        if self.accept_keyword("WHERE") {
            Ok(Some(self.expr(0)?))
        } else {
            Ok(None)
        }
    }

    fn limit_offset(&mut self) -> Result<(usize, usize), ParseError> {
        let mut limit = 0;
        let mut offset = 0;
        if self.accept_keyword("LIMIT") {
            limit = self.unsigned()?;
        }
        if self.accept_keyword("OFFSET") {
            offset = self.unsigned()?;
        }
        Ok((limit, offset))
    }

    fn show(&mut self) -> Result<Statement, ParseError> {
        let token = self.next();
        let word = match &token.tok {
            Tok::Ident(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        };
        match word.as_str() {
            "DATABASES" => Ok(Statement::ShowDatabases),
            "MEASUREMENTS" => {
                let on = self.on_clause()?;
                let mut with = None;
                if self.accept_keyword("WITH") {
                    self.expect_keyword("MEASUREMENT")?;
                    let op = self.next();
                    with = Some(match op.tok {
                        Tok::Op("=~") => MeasurementName::Regex(self.regex()?),
                        Tok::Op("=") => MeasurementName::Name(self.identifier_or_string()?),
                        _ => return Err(self.unexpected(&op, &["=", "=~"])),
                    });
                }
                let condition = self.where_clause()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowMeasurements {
                    on,
                    with,
                    condition,
                    limit,
                    offset,
                })
            }
            "TAG" => {
                let token = self.next();
                if Parser::is_keyword(&token, "KEYS") {
                    let on = self.on_clause()?;
                    let from = self.optional_from()?;
                    let condition = self.where_clause()?;
                    let (limit, offset) = self.limit_offset()?;
                    Ok(Statement::ShowTagKeys {
                        on,
                        from,
                        condition,
                        limit,
                        offset,
                    })
                } else if Parser::is_keyword(&token, "VALUES") {
                    let on = self.on_clause()?;
                    let from = self.optional_from()?;
                    self.expect_keyword("WITH")?;
                    self.expect_keyword("KEY")?;
                    let op = self.next();
                    let key = match op.tok {
                        Tok::Op("=") => KeyMatch::Eq(self.identifier_or_string()?),
                        Tok::Op("!=") => KeyMatch::NotEq(self.identifier_or_string()?),
                        Tok::Op("=~") => KeyMatch::Regex(self.regex()?),
                        Tok::Op("!~") => KeyMatch::NotRegex(self.regex()?),
                        _ if Parser::is_keyword(&op, "IN") => {
                            self.expect(Tok::LParen, "(")?;
                            let mut keys = vec![self.identifier_or_string()?];
                            loop {
                                let token = self.next();
                                match token.tok {
                                    Tok::Comma => keys.push(self.identifier_or_string()?),
                                    Tok::RParen => break,
                                    _ => return Err(self.unexpected(&token, &[",", ")"])),
                                }
                            }
                            KeyMatch::In(keys)
                        }
                        _ => return Err(self.unexpected(&op, &["=", "!=", "=~", "!~", "IN"])),
                    };
                    let condition = self.where_clause()?;
                    let (limit, offset) = self.limit_offset()?;
                    Ok(Statement::ShowTagValues {
                        on,
                        from,
                        key,
                        condition,
                        limit,
                        offset,
                    })
                } else {
                    Err(self.unexpected(&token, &["KEYS", "VALUES"]))
                }
            }
            "FIELD" => {
                self.expect_keyword("KEYS")?;
                let on = self.on_clause()?;
                let from = self.optional_from()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowFieldKeys {
                    on,
                    from,
                    limit,
                    offset,
                })
            }
            "RETENTION" => {
                self.expect_keyword("POLICIES")?;
                let on = self.on_clause()?;
                Ok(Statement::ShowRetentionPolicies { on })
            }
            "SERIES" => {
                let on = self.on_clause()?;
                let from = self.optional_from()?;
                let condition = self.where_clause()?;
                let (limit, offset) = self.limit_offset()?;
                Ok(Statement::ShowSeries {
                    on,
                    from,
                    condition,
                    limit,
                    offset,
                })
            }
            _ => Err(self.unexpected(
                &token,
                &[
                    "CONTINUOUS",
                    "DATABASES",
                    "DIAGNOSTICS",
                    "FIELD",
                    "GRANTS",
                    "MEASUREMENT",
                    "MEASUREMENTS",
                    "QUERIES",
                    "RETENTION",
                    "SERIES",
                    "SHARD",
                    "SHARDS",
                    "STATS",
                    "SUBSCRIPTIONS",
                    "TAG",
                    "USERS",
                ],
            )),
        }
    }

    fn sources(&mut self) -> Result<Vec<Source>, ParseError> {
        let mut sources = vec![self.source()?];
        while self.peek().tok == Tok::Comma {
            self.next();
            sources.push(self.source()?);
        }
        Ok(sources)
    }

    fn source(&mut self) -> Result<Source, ParseError> {
        self.skip_space();
        if self.pos >= self.chars.len() {
            // InfluxDB's probe for a regex reads one char past the end.
            return Err(self.error_at(self.pos + 1, "found EOF, expected identifier"));
        }
        if self.chars.get(self.pos) == Some(&'/') {
            return Ok(Source {
                database: None,
                retention_policy: None,
                measurement: MeasurementName::Regex(self.regex()?),
            });
        }
        let mut parts = vec![self.identifier()?];
        while parts.len() < 3 && self.peek().tok == Tok::Dot {
            self.next();
            self.skip_space();
            if parts.len() == 2 || self.chars.get(self.pos) != Some(&'/') {
                if parts.len() == 1 && self.peek().tok == Tok::Dot {
                    // `"db".."m"`: default retention policy.
                    parts.push(String::new());
                    continue;
                }
                parts.push(self.identifier()?);
            } else {
                let regex = self.regex()?;
                return Ok(Source {
                    database: None,
                    retention_policy: Some(parts.remove(0)),
                    measurement: MeasurementName::Regex(regex),
                });
            }
        }
        let measurement = MeasurementName::Name(parts.pop().unwrap_or_default());
        let (database, retention_policy) = match parts.len() {
            2 => (Some(parts[0].clone()), Some(parts[1].clone())),
            1 => (None, Some(parts[0].clone())),
            _ => (None, None),
        };
        Ok(Source {
            database,
            retention_policy: retention_policy.filter(|rp| !rp.is_empty()),
            measurement,
        })
    }

    fn select(&mut self) -> Result<Select, ParseError> {
        let mut fields = Vec::new();
        loop {
            let expr = if self.peek().tok == Tok::Op("*") {
                self.next();
                Expr::Wildcard
            } else {
                self.expr(0)?
            };
            let alias = if self.accept_keyword("AS") {
                Some(self.identifier()?)
            } else {
                None
            };
            fields.push(SelectField { expr, alias });
            if self.peek().tok == Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        let token = self.next();
        if !Parser::is_keyword(&token, "FROM") {
            return Err(self.unexpected(&token, &["FROM"]));
        }
        let sources = self.sources()?;
        let condition = self.where_clause()?;
        let mut select = Select {
            fields,
            sources,
            condition,
            group_time: None,
            group_tags: GroupTags::Keys(Vec::new()),
            fill: Fill::Null,
            descending: false,
            limit: 0,
            offset: 0,
            slimit: 0,
            soffset: 0,
            timezone: None,
        };
        if self.accept_keyword("GROUP") {
            self.expect_keyword("BY")?;
            self.group_by(&mut select)?;
        }
        if self.accept_keyword("FILL") {
            select.fill = self.fill()?;
        }
        if self.accept_keyword("ORDER") {
            self.expect_keyword("BY")?;
            let token = self.next();
            let is_time = match &token.tok {
                Tok::Ident(w) | Tok::QuotedIdent(w) => w.eq_ignore_ascii_case("time"),
                _ => false,
            };
            if !is_time {
                return Err(self.error_at(token.start, "only ORDER BY time supported at this time"));
            }
            if self.accept_keyword("DESC") {
                select.descending = true;
            } else {
                self.accept_keyword("ASC");
            }
        }
        if self.accept_keyword("LIMIT") {
            select.limit = self.unsigned()?;
        }
        if self.accept_keyword("OFFSET") {
            select.offset = self.unsigned()?;
        }
        if self.accept_keyword("SLIMIT") {
            select.slimit = self.unsigned()?;
        }
        if self.accept_keyword("SOFFSET") {
            select.soffset = self.unsigned()?;
        }
        if self.accept_keyword("TZ") {
            self.expect(Tok::LParen, "(")?;
            let token = self.next();
            let Tok::Str(zone) = token.tok else {
                return Err(self.unexpected(&token, &["string"]));
            };
            self.expect(Tok::RParen, ")")?;
            select.timezone = Some(zone);
        }
        Ok(select)
    }

    fn group_by(&mut self, select: &mut Select) -> Result<(), ParseError> {
        let mut keys = Vec::new();
        let mut all = false;
        loop {
            let token = self.peek();
            if token.tok == Tok::Op("*") {
                self.next();
                all = true;
            } else if Parser::is_keyword(&token, "time") && matches!(token.tok, Tok::Ident(_)) && {
                let saved = self.pos;
                self.next();
                let paren = self.peek().tok == Tok::LParen;
                self.pos = saved;
                paren
            } {
                self.next();
                self.next();
                let interval_token = self.next();
                if matches!(interval_token.tok, Tok::Integer(_) | Tok::Number(_)) {
                    return Err(unpositioned("invalid duration"));
                }
                let Tok::Duration(interval) = interval_token.tok else {
                    return Err(self.unexpected(&interval_token, &["duration"]));
                };
                let mut offset = 0;
                if self.peek().tok == Tok::Comma {
                    self.next();
                    let mut negative = false;
                    if self.peek().tok == Tok::Op("-") {
                        self.next();
                        negative = true;
                    }
                    let token = self.next();
                    let Tok::Duration(d) = token.tok else {
                        return Err(self.unexpected(&token, &["duration"]));
                    };
                    offset = if negative { -d } else { d };
                }
                self.expect(Tok::RParen, ")")?;
                if interval <= 0 {
                    return Err(self.error_at(
                        interval_token.start,
                        "time dimension must have duration argument",
                    ));
                }
                select.group_time = Some((interval, offset));
            } else {
                let name = self.identifier()?;
                if self.peek().tok == Tok::DoubleColon {
                    self.next();
                    let token = self.next();
                    if !Parser::is_keyword(&token, "tag") {
                        return Err(self.unexpected(&token, &["tag"]));
                    }
                }
                keys.push(name);
            }
            if self.peek().tok == Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        select.group_tags = if all {
            GroupTags::All
        } else {
            GroupTags::Keys(keys)
        };
        Ok(())
    }

    fn fill(&mut self) -> Result<Fill, ParseError> {
        self.expect(Tok::LParen, "(")?;
        let mut negative = false;
        if self.peek().tok == Tok::Op("-") {
            self.next();
            negative = true;
        }
        let token = self.next();
        let fill = match &token.tok {
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") && !negative => Fill::Null,
            Tok::Ident(w) if w.eq_ignore_ascii_case("none") && !negative => Fill::None,
            Tok::Ident(w) if w.eq_ignore_ascii_case("previous") && !negative => Fill::Previous,
            Tok::Ident(w) if w.eq_ignore_ascii_case("linear") && !negative => Fill::Linear,
            Tok::Integer(n) => Fill::Integer(if negative { -n } else { *n }),
            Tok::Number(n) => Fill::Number(if negative { -n } else { *n }),
            _ => return Err(unpositioned("expected number argument in fill()")),
        };
        self.expect(Tok::RParen, ")")?;
        Ok(fill)
    }

    fn binary_op(token: &Token) -> Option<(BinaryOp, u8)> {
        Some(match &token.tok {
            Tok::Op("+") => (BinaryOp::Add, 5),
            Tok::Op("-") => (BinaryOp::Sub, 5),
            Tok::Op("*") => (BinaryOp::Mul, 6),
            Tok::Op("/") => (BinaryOp::Div, 6),
            Tok::Op("%") => (BinaryOp::Mod, 6),
            Tok::Op("=") => (BinaryOp::Eq, 4),
            Tok::Op("!=") => (BinaryOp::NotEq, 4),
            Tok::Op("<") => (BinaryOp::Lt, 4),
            Tok::Op("<=") => (BinaryOp::LtEq, 4),
            Tok::Op(">") => (BinaryOp::Gt, 4),
            Tok::Op(">=") => (BinaryOp::GtEq, 4),
            Tok::Op("=~") => (BinaryOp::Match, 4),
            Tok::Op("!~") => (BinaryOp::NotMatch, 4),
            Tok::Ident(w) if w.eq_ignore_ascii_case("AND") => (BinaryOp::And, 2),
            Tok::Ident(w) if w.eq_ignore_ascii_case("OR") => (BinaryOp::Or, 1),
            _ => return None,
        })
    }

    /// Precedence climbing; `min` is the lowest precedence accepted.
    fn expr(&mut self, min: u8) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            let offset = self.pos;
            return Err(self.error_at(offset, "expression nested too deeply"));
        }
        let mut lhs = self.unary()?;
        loop {
            let token = self.peek();
            let Some((op, precedence)) = Parser::binary_op(&token) else {
                break;
            };
            if precedence < min {
                break;
            }
            self.next();
            let rhs = if matches!(op, BinaryOp::Match | BinaryOp::NotMatch) {
                Expr::Regex(self.regex()?)
            } else {
                self.expr(precedence + 1)?
            };
            lhs = Expr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let token = self.next();
        match token.tok {
            Tok::LParen => {
                let inner = self.expr(0)?;
                self.expect(Tok::RParen, ")")?;
                Ok(Expr::Paren(Box::new(inner)))
            }
            Tok::Op("-") => {
                let next = self.next();
                match next.tok {
                    Tok::Integer(n) => Ok(Expr::Integer(-n)),
                    Tok::Number(n) => Ok(Expr::Number(-n)),
                    Tok::Duration(d) => Ok(Expr::Duration(-d)),
                    _ => Err(self.unexpected(&next, &["identifier", "string", "number", "bool"])),
                }
            }
            Tok::Op("*") => Ok(Expr::Wildcard),
            Tok::Integer(n) => Ok(Expr::Integer(n)),
            Tok::Number(n) => Ok(Expr::Number(n)),
            Tok::Duration(d) => Ok(Expr::Duration(d)),
            Tok::Str(s) => Ok(Expr::String(s)),
            Tok::QuotedIdent(name) => self.var_ref(name),
            Tok::Ident(ref word) => {
                let word = word.clone();
                if word.eq_ignore_ascii_case("true") {
                    return Ok(Expr::Boolean(true));
                }
                if word.eq_ignore_ascii_case("false") {
                    return Ok(Expr::Boolean(false));
                }
                if self.peek().tok == Tok::LParen {
                    self.next();
                    let mut args = Vec::new();
                    if self.peek().tok == Tok::RParen {
                        self.next();
                    } else {
                        loop {
                            self.skip_space();
                            if self.chars.get(self.pos) == Some(&'/') {
                                args.push(Expr::Regex(self.regex()?));
                            } else {
                                args.push(self.expr(0)?);
                            }
                            let token = self.next();
                            match token.tok {
                                Tok::Comma => continue,
                                Tok::RParen => break,
                                _ => return Err(self.unexpected(&token, &[",", ")"])),
                            }
                        }
                    }
                    return Ok(Expr::Call {
                        name: word.to_ascii_lowercase(),
                        args,
                    });
                }
                if is_reserved(&word) {
                    return Err(
                        self.unexpected(&token, &["identifier", "string", "number", "bool"])
                    );
                }
                self.var_ref(word)
            }
            _ => Err(self.unexpected(&token, &["identifier", "string", "number", "bool"])),
        }
    }

    fn var_ref(&mut self, name: String) -> Result<Expr, ParseError> {
        let mut kind = None;
        if self.peek().tok == Tok::DoubleColon {
            self.next();
            let token = self.next();
            kind = match &token.tok {
                Tok::Ident(w) if w.eq_ignore_ascii_case("tag") => Some(RefKind::Tag),
                Tok::Ident(w) if w.eq_ignore_ascii_case("field") => Some(RefKind::Field),
                Tok::Ident(w)
                    if ["float", "integer", "unsigned", "string", "boolean"]
                        .iter()
                        .any(|t| w.eq_ignore_ascii_case(t)) =>
                {
                    Some(RefKind::Field)
                }
                _ => {
                    return Err(self.unexpected(
                        &token,
                        &[
                            "float", "integer", "unsigned", "string", "boolean", "field", "tag",
                        ],
                    ))
                }
            };
        }
        Ok(Expr::VarRef { name, kind })
    }
}

/// Go's wording for the common regex mistakes; Rust's text otherwise.
fn go_regex_error(pattern: &str, error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text.lines().last().unwrap_or("").trim();
    if last.contains("unclosed character class") {
        let from = pattern.rfind('[').unwrap_or(0);
        return format!("missing closing ]: `{}`", &pattern[from..]);
    }
    if last.contains("unclosed group") {
        return format!("missing closing ): `{pattern}`");
    }
    if last.contains("unopened group") {
        return format!("unexpected ): `{pattern}`");
    }
    if last.contains("repetition operator missing expression") {
        return "missing argument to repetition operator".to_string();
    }
    last.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests;
