//! The catalog: databases, tables and the kind of every column. One truth
//! for all shards.
//!
//! Shard 0 owns the authoritative [`Catalog`]; every shard keeps a replica
//! of it as a cache. The write path checks points against its own replica
//! without locks or messages. Only a *miss* — a database, table or column
//! the replica does not know — costs a round trip: the shard sends
//! [`Proposal`]s to the owner, which decides each one (first come wins),
//! logs the accepted entries to the catalog WAL, waits for their
//! `fdatasync`, and answers with [`Decision`]s. So a new entry is durable
//! before the 204 of the write that created it, and a column can never
//! have two kinds on two shards: a replica only ever learns kinds from the
//! owner.
//!
//! This module is pure state and rules; the messages travel in
//! [`crate::route`] and the log is a [`crate::wal::Wal`].

use std::collections::HashMap;
use std::fmt;

use crate::config::SchemaConfig;
use crate::line_protocol::FieldValue;
use crate::retention::Period;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    Float,
    Integer,
    UInteger,
    String,
    Boolean,
}

impl FieldType {
    pub fn of(value: &FieldValue<'_>) -> FieldType {
        match value {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::UInteger(_) => FieldType::UInteger,
            FieldValue::String(_) => FieldType::String,
            FieldValue::Boolean(_) => FieldType::Boolean,
        }
    }

    /// InfluxQL's name of the type (`SHOW FIELD KEYS`, error messages).
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }

    fn code(self) -> u8 {
        match self {
            FieldType::Float => 0,
            FieldType::Integer => 1,
            FieldType::UInteger => 2,
            FieldType::String => 3,
            FieldType::Boolean => 4,
        }
    }

    fn from_code(code: u8) -> Option<FieldType> {
        Some(match code {
            0 => FieldType::Float,
            1 => FieldType::Integer,
            2 => FieldType::UInteger,
            3 => FieldType::String,
            4 => FieldType::Boolean,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    Tag,
    Field(FieldType),
}

impl ColumnKind {
    fn code(self) -> u8 {
        match self {
            ColumnKind::Tag => 0xff,
            ColumnKind::Field(t) => t.code(),
        }
    }

    fn from_code(code: u8) -> Option<ColumnKind> {
        if code == 0xff {
            Some(ColumnKind::Tag)
        } else {
            FieldType::from_code(code).map(ColumnKind::Field)
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ColumnKind::Tag => "tag",
            ColumnKind::Field(t) => t.name(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub columns: HashMap<String, ColumnKind>,
}

#[derive(Clone, Debug, Default)]
pub struct Database {
    pub tables: HashMap<String, Table>,
    /// Forever until an [`Entry::SetRetention`] says otherwise: a database
    /// of a log written before retention existed has none, and keeps its
    /// points forever.
    pub retention: Period,
}

/// The authoritative catalog (owner) or a replica (every shard).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub databases: HashMap<String, Database>,
}

/// A request to the owner: learn (and if new and allowed, create) one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// `create == false`: only ask whether it exists (auto-create off).
    /// A database created now gets `retention`; an existing one keeps its
    /// own.
    Database {
        name: String,
        create: bool,
        retention: Period,
    },
    /// Set an existing database's retention (`ALTER RETENTION POLICY`).
    Retention { database: String, period: Period },
    Column {
        database: String,
        table: String,
        column: String,
        kind: ColumnKind,
    },
}

/// The owner's answer to one proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The entry exists with the proposed kind (created now or before).
    Accepted,
    /// The column exists with another kind.
    Conflict { existing: ColumnKind },
    /// The database does not exist (and was not to be created).
    NoDatabase,
    /// A schema limit forbids the new entry.
    LimitReached(Limit),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Databases(usize),
    Tables(usize),
    Columns(usize),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Databases(n) => write!(f, "service limit reached: at most {n} databases"),
            Limit::Tables(n) => write!(f, "service limit reached: at most {n} tables per database"),
            Limit::Columns(n) => write!(f, "service limit reached: at most {n} columns per table"),
        }
    }
}

/// A durable catalog change, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Creates a database that keeps points forever; a [`Entry::SetRetention`]
    /// logged with it (in the same record) gives it its period.
    CreateDatabase(String),
    DropDatabase(String),
    SetRetention {
        database: String,
        period: Period,
    },
    CreateColumn {
        database: String,
        table: String,
        column: String,
        kind: ColumnKind,
    },
}

/// Why a database name is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { length: usize },
    BadCharacter { character: char, position: usize },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "must not be empty"),
            NameError::TooLong { length } => write!(f, "is {length} characters long, at most 64 allowed"),
            NameError::BadCharacter { character, position } => write!(
                f,
                "character {character:?} at position {position} is not allowed (letters, digits, '_', '-', '/')"
            ),
        }
    }
}

/// Database names: 1–64 characters of ASCII letters, digits, `_`, `-`, `/`.
pub fn validate_database_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let length = name.chars().count();
    if length > 64 {
        return Err(NameError::TooLong { length });
    }
    for (position, character) in name.chars().enumerate() {
        if !(character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '/')) {
            return Err(NameError::BadCharacter {
                character,
                position: position + 1,
            });
        }
    }
    Ok(())
}

impl Catalog {
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name)
    }

    pub fn column(&self, database: &str, table: &str, column: &str) -> Option<ColumnKind> {
        self.databases
            .get(database)?
            .tables
            .get(table)?
            .columns
            .get(column)
            .copied()
    }

    /// A database's retention period; `None` for an unknown database.
    pub fn retention(&self, database: &str) -> Option<Period> {
        self.databases.get(database).map(|db| db.retention)
    }

    /// Owner side: decides one proposal, and returns the entries to log
    /// when it changes something.
    pub fn decide(&mut self, proposal: &Proposal, limits: &SchemaConfig) -> (Decision, Vec<Entry>) {
        match proposal {
            Proposal::Database {
                name,
                create,
                retention,
            } => {
                if self.databases.contains_key(name) {
                    return (Decision::Accepted, Vec::new());
                }
                if !create {
                    return (Decision::NoDatabase, Vec::new());
                }
                if self.databases.len() >= limits.databases_max {
                    return (
                        Decision::LimitReached(Limit::Databases(limits.databases_max)),
                        Vec::new(),
                    );
                }
                let entries = vec![
                    Entry::CreateDatabase(name.clone()),
                    Entry::SetRetention {
                        database: name.clone(),
                        period: *retention,
                    },
                ];
                entries.iter().for_each(|entry| self.apply(entry));
                (Decision::Accepted, entries)
            }
            Proposal::Retention { database, period } => match self.databases.get(database) {
                None => (Decision::NoDatabase, Vec::new()),
                Some(db) if db.retention == *period => (Decision::Accepted, Vec::new()),
                Some(_) => {
                    let entry = Entry::SetRetention {
                        database: database.clone(),
                        period: *period,
                    };
                    self.apply(&entry);
                    (Decision::Accepted, vec![entry])
                }
            },
            Proposal::Column {
                database,
                table,
                column,
                kind,
            } => {
                let Some(db) = self.databases.get(database) else {
                    return (Decision::NoDatabase, Vec::new());
                };
                if let Some(t) = db.tables.get(table) {
                    if let Some(existing) = t.columns.get(column) {
                        return if existing == kind {
                            (Decision::Accepted, Vec::new())
                        } else {
                            (
                                Decision::Conflict {
                                    existing: *existing,
                                },
                                Vec::new(),
                            )
                        };
                    }
                    // +1: the time column counts.
                    if t.columns.len() + 1 >= limits.columns_per_table_max {
                        return (
                            Decision::LimitReached(Limit::Columns(limits.columns_per_table_max)),
                            Vec::new(),
                        );
                    }
                } else if db.tables.len() >= limits.tables_per_database_max {
                    return (
                        Decision::LimitReached(Limit::Tables(limits.tables_per_database_max)),
                        Vec::new(),
                    );
                }
                let entry = Entry::CreateColumn {
                    database: database.clone(),
                    table: table.clone(),
                    column: column.clone(),
                    kind: *kind,
                };
                self.apply(&entry);
                (Decision::Accepted, vec![entry])
            }
        }
    }

    /// Replica side: learns what the owner decided. (A new database and
    /// its retention reach every replica by broadcast before the decision
    /// is answered; this covers the proposer in any case.)
    pub fn learn(&mut self, proposal: &Proposal, decision: Decision) {
        match (proposal, decision) {
            (Proposal::Database { name, .. }, Decision::Accepted) => {
                self.databases.entry(name.clone()).or_default();
            }
            (Proposal::Retention { database, period }, Decision::Accepted) => {
                self.apply(&Entry::SetRetention {
                    database: database.clone(),
                    period: *period,
                })
            }
            (
                Proposal::Column {
                    database,
                    table,
                    column,
                    kind,
                },
                Decision::Accepted,
            ) => self.apply(&Entry::CreateColumn {
                database: database.clone(),
                table: table.clone(),
                column: column.clone(),
                kind: *kind,
            }),
            (
                Proposal::Column {
                    database,
                    table,
                    column,
                    ..
                },
                Decision::Conflict { existing },
            ) => self.apply(&Entry::CreateColumn {
                database: database.clone(),
                table: table.clone(),
                column: column.clone(),
                kind: existing,
            }),
            _ => {}
        }
    }

    /// Applies a logged entry (owner after deciding, replay, replicas).
    pub fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::CreateDatabase(name) => {
                self.databases.entry(name.clone()).or_default();
            }
            Entry::DropDatabase(name) => {
                self.databases.remove(name);
            }
            Entry::SetRetention { database, period } => {
                if let Some(db) = self.databases.get_mut(database) {
                    db.retention = *period;
                }
            }
            Entry::CreateColumn {
                database,
                table,
                column,
                kind,
            } => {
                self.databases
                    .entry(database.clone())
                    .or_default()
                    .tables
                    .entry(table.clone())
                    .or_default()
                    .columns
                    .entry(column.clone())
                    .or_insert(*kind);
            }
        }
    }

    /// Database names, sorted.
    pub fn database_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.databases.keys().cloned().collect();
        names.sort();
        names
    }
}

const ENTRY_CREATE_DATABASE: u8 = 1;
const ENTRY_DROP_DATABASE: u8 = 2;
const ENTRY_CREATE_COLUMN: u8 = 3;
const ENTRY_SET_RETENTION: u8 = 4;

fn put_str(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).expect("catalog names are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Encodes entries as one catalog WAL record payload:
/// `count:u32 (tag:u8 str… [kind:u8 | period_ns:i64])*`, strings as
/// `len:u32 bytes`, integers little-endian. Tags: 1 create database,
/// 2 drop database, 3 create column (+ kind), 4 set retention (+ period in
/// ns, 0 = forever; logs written before it existed have no tag 4).
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * entries.len());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        match entry {
            Entry::CreateDatabase(name) => {
                out.push(ENTRY_CREATE_DATABASE);
                put_str(&mut out, name);
            }
            Entry::DropDatabase(name) => {
                out.push(ENTRY_DROP_DATABASE);
                put_str(&mut out, name);
            }
            Entry::SetRetention { database, period } => {
                out.push(ENTRY_SET_RETENTION);
                put_str(&mut out, database);
                out.extend_from_slice(&period.as_ns().to_le_bytes());
            }
            Entry::CreateColumn {
                database,
                table,
                column,
                kind,
            } => {
                out.push(ENTRY_CREATE_COLUMN);
                put_str(&mut out, database);
                put_str(&mut out, table);
                put_str(&mut out, column);
                out.push(kind.code());
            }
        }
    }
    out
}

/// Decodes a catalog record payload; `None` if malformed.
pub fn decode_entries(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = payload.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    fn u32_of(bytes: &[u8]) -> u32 {
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
    let count = u32_of(take(4)?);
    let mut entries = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let tag = take(1)?[0];
        let mut string = || -> Option<String> {
            let len = u32_of(take(4)?) as usize;
            String::from_utf8(take(len)?.to_vec()).ok()
        };
        let entry = match tag {
            ENTRY_CREATE_DATABASE => Entry::CreateDatabase(string()?),
            ENTRY_DROP_DATABASE => Entry::DropDatabase(string()?),
            ENTRY_SET_RETENTION => {
                let database = string()?;
                let ns = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
                Entry::SetRetention {
                    database,
                    period: Period::from_ns(ns).ok()?,
                }
            }
            ENTRY_CREATE_COLUMN => {
                let database = string()?;
                let table = string()?;
                let column = string()?;
                let kind = ColumnKind::from_code(take(1)?[0])?;
                Entry::CreateColumn {
                    database,
                    table,
                    column,
                    kind,
                }
            }
            _ => return None,
        };
        entries.push(entry);
    }
    (at == payload.len()).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(db: &str, table: &str, column: &str, kind: ColumnKind) -> Proposal {
        Proposal::Column {
            database: db.into(),
            table: table.into(),
            column: column.into(),
            kind,
        }
    }

    /// Goal: the first kind proposed for a column wins and later proposals
    /// of another kind conflict, naming the existing kind. Method: decide
    /// a sequence on an owner catalog.
    #[test]
    fn first_kind_wins() {
        let limits = SchemaConfig::default();
        let mut owner = Catalog::default();
        let db = Proposal::Database {
            name: "db".into(),
            create: true,
            retention: Period::FOREVER,
        };
        assert!(matches!(
            owner.decide(&db, &limits),
            (Decision::Accepted, entries) if entries.len() == 2
        ));
        assert!(matches!(
            owner.decide(&db, &limits),
            (Decision::Accepted, entries) if entries.is_empty()
        ));
        let float = column("db", "cpu", "v", ColumnKind::Field(FieldType::Float));
        let string = column("db", "cpu", "v", ColumnKind::Field(FieldType::String));
        let tag = column("db", "cpu", "v", ColumnKind::Tag);
        assert!(matches!(
            owner.decide(&float, &limits),
            (Decision::Accepted, entries) if entries.len() == 1
        ));
        assert_eq!(
            owner.decide(&string, &limits).0,
            Decision::Conflict {
                existing: ColumnKind::Field(FieldType::Float)
            }
        );
        assert_eq!(
            owner.decide(&tag, &limits).0,
            Decision::Conflict {
                existing: ColumnKind::Field(FieldType::Float)
            }
        );
        // A replica that learns the conflict knows the real kind afterwards.
        let mut replica = Catalog::default();
        replica.learn(
            &string,
            Decision::Conflict {
                existing: ColumnKind::Field(FieldType::Float),
            },
        );
        assert_eq!(
            replica.column("db", "cpu", "v"),
            Some(ColumnKind::Field(FieldType::Float))
        );
    }

    /// Goal: schema limits refuse new entries and say which limit.
    /// Method: tiny limits.
    #[test]
    fn limits_are_enforced() {
        let limits = SchemaConfig {
            auto_create_databases: true,
            databases_max: 1,
            tables_per_database_max: 1,
            columns_per_table_max: 3,
        };
        let mut owner = Catalog::default();
        let create = |name: &str| Proposal::Database {
            name: name.into(),
            create: true,
            retention: Period::FOREVER,
        };
        assert_eq!(owner.decide(&create("a"), &limits).0, Decision::Accepted);
        assert_eq!(
            owner.decide(&create("b"), &limits).0,
            Decision::LimitReached(Limit::Databases(1))
        );
        let f = ColumnKind::Field(FieldType::Integer);
        assert_eq!(
            owner.decide(&column("a", "t", "x", f), &limits).0,
            Decision::Accepted
        );
        assert_eq!(
            owner.decide(&column("a", "t", "y", f), &limits).0,
            Decision::Accepted
        );
        assert_eq!(
            owner.decide(&column("a", "t", "z", f), &limits).0,
            Decision::LimitReached(Limit::Columns(3))
        );
        assert_eq!(
            owner.decide(&column("a", "t2", "x", f), &limits).0,
            Decision::LimitReached(Limit::Tables(1))
        );
        assert_eq!(
            owner
                .decide(
                    &Proposal::Database {
                        name: "zz".into(),
                        create: false,
                        retention: Period::FOREVER,
                    },
                    &limits
                )
                .0,
            Decision::NoDatabase
        );
    }

    /// Goal: logged entries decode to what was encoded, and damage is
    /// detected. Method: round trip; cut at every length.
    #[test]
    fn entries_round_trip() {
        let entries = vec![
            Entry::CreateDatabase("db".into()),
            Entry::CreateColumn {
                database: "db".into(),
                table: "cpu".into(),
                column: "host".into(),
                kind: ColumnKind::Tag,
            },
            Entry::SetRetention {
                database: "db".into(),
                period: Period::parse("3d").expect("3d"),
            },
            Entry::SetRetention {
                database: "db".into(),
                period: Period::FOREVER,
            },
            Entry::DropDatabase("db".into()),
        ];
        let bytes = encode_entries(&entries);
        assert_eq!(decode_entries(&bytes), Some(entries));
        for cut in 0..bytes.len() {
            assert_eq!(decode_entries(&bytes[..cut]), None);
        }
    }

    /// Goal: a log written before retention existed (tags 1-3 only) still
    /// decodes, byte for byte as that build wrote it, and its databases
    /// keep data forever; a period under a second in a record is damage.
    /// Method: a payload spelled out by hand in the old format; replay;
    /// then a tag-4 entry with a 1 ns period.
    #[test]
    fn old_logs_decode_and_keep_forever() {
        let mut old = Vec::new();
        old.extend_from_slice(&2u32.to_le_bytes());
        old.push(1);
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"db");
        old.push(3);
        for name in ["db", "cpu", "v"] {
            old.extend_from_slice(&(name.len() as u32).to_le_bytes());
            old.extend_from_slice(name.as_bytes());
        }
        old.push(0);
        let entries = decode_entries(&old).expect("old format decodes");
        let mut catalog = Catalog::default();
        entries.iter().for_each(|e| catalog.apply(e));
        assert_eq!(catalog.retention("db"), Some(Period::FOREVER));
        assert_eq!(
            catalog.column("db", "cpu", "v"),
            Some(ColumnKind::Field(FieldType::Float))
        );
        let mut short = encode_entries(&[Entry::SetRetention {
            database: "db".into(),
            period: Period::FOREVER,
        }]);
        let at = short.len() - 8;
        short[at..].copy_from_slice(&1i64.to_le_bytes());
        assert_eq!(decode_entries(&short), None);
    }

    /// Goal: a database created by a proposal gets the proposed retention
    /// (logged with its creation), an existing one keeps its own, and a
    /// retention proposal changes it or reports the database missing.
    /// Method: decide on an owner; replay the logged entries on a fresh
    /// catalog and compare.
    #[test]
    fn retention_is_decided_and_logged() {
        let limits = SchemaConfig::default();
        let three_days = Period::parse("3d").expect("3d");
        let week = Period::parse("7d").expect("7d");
        let mut owner = Catalog::default();
        let mut log = Vec::new();
        let create = |retention| Proposal::Database {
            name: "db".into(),
            create: true,
            retention,
        };
        let (decision, entries) = owner.decide(&create(three_days), &limits);
        assert_eq!(decision, Decision::Accepted);
        log.extend(entries);
        let (_, entries) = owner.decide(&create(week), &limits);
        assert!(entries.is_empty(), "an existing database keeps its period");
        assert_eq!(owner.retention("db"), Some(three_days));
        let alter = Proposal::Retention {
            database: "db".into(),
            period: week,
        };
        let (decision, entries) = owner.decide(&alter, &limits);
        assert_eq!(decision, Decision::Accepted);
        log.extend(entries);
        assert_eq!(owner.retention("db"), Some(week));
        let missing = Proposal::Retention {
            database: "nosuch".into(),
            period: week,
        };
        assert_eq!(owner.decide(&missing, &limits).0, Decision::NoDatabase);
        let mut replayed = Catalog::default();
        let decoded = decode_entries(&encode_entries(&log)).expect("decodes");
        decoded.iter().for_each(|e| replayed.apply(e));
        assert_eq!(replayed.retention("db"), Some(week));
        assert_eq!(replayed.retention("nosuch"), None);
    }

    /// Goal: database names follow the documented rule. Method: table.
    #[test]
    fn database_names() {
        assert!(validate_database_name("telegraf").is_ok());
        assert!(validate_database_name("db/rp-1_x").is_ok());
        assert_eq!(validate_database_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_database_name("a b"),
            Err(NameError::BadCharacter {
                character: ' ',
                position: 2
            })
        );
        assert!(matches!(
            validate_database_name(&"x".repeat(65)),
            Err(NameError::TooLong { length: 65 })
        ));
    }
}
