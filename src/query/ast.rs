//! InfluxQL syntax tree: what the parser produces and the evaluator reads.

use regex::Regex;

/// `::tag` / `::field` casts on a reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefKind {
    Tag,
    Field,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Match,
    NotMatch,
    And,
    Or,
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
                | BinaryOp::Match
                | BinaryOp::NotMatch
        )
    }

    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod
        )
    }
}

#[derive(Clone, Debug)]
pub enum Expr {
    VarRef {
        name: String,
        kind: Option<RefKind>,
    },
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Integer(i64),
    Number(f64),
    String(String),
    Boolean(bool),
    /// Nanoseconds.
    Duration(i64),
    Regex(Regex),
    Wildcard,
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Paren(Box<Expr>),
}

/// One `FROM` source.
#[derive(Clone, Debug)]
pub struct Source {
    pub database: Option<String>,
    pub retention_policy: Option<String>,
    pub measurement: MeasurementName,
}

#[derive(Clone, Debug)]
pub enum MeasurementName {
    Name(String),
    Regex(Regex),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Fill {
    Null,
    None,
    Number(f64),
    Integer(i64),
    Previous,
    Linear,
}

#[derive(Clone, Debug)]
pub struct SelectField {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Clone, Debug)]
pub enum GroupTags {
    Keys(Vec<String>),
    All,
}

#[derive(Clone, Debug)]
pub struct Select {
    pub fields: Vec<SelectField>,
    pub sources: Vec<Source>,
    pub condition: Option<Expr>,
    /// `GROUP BY time(interval, offset)` in nanoseconds.
    pub group_time: Option<(i64, i64)>,
    pub group_tags: GroupTags,
    pub fill: Fill,
    pub descending: bool,
    pub limit: usize,
    pub offset: usize,
    pub slimit: usize,
    pub soffset: usize,
    pub timezone: Option<String>,
}

/// `WITH KEY …` of `SHOW TAG VALUES`.
#[derive(Clone, Debug)]
pub enum KeyMatch {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    Regex(Regex),
    NotRegex(Regex),
}

/// The retention clauses of `CREATE DATABASE … WITH` and `ALTER RETENTION
/// POLICY`, as written (durations in nanoseconds, `INF` as 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionClauses {
    pub duration_ns: Option<i64>,
    pub replication: Option<u32>,
    pub shard_duration_ns: Option<i64>,
    /// `NAME rp` (CREATE only).
    pub name: Option<String>,
    /// `DEFAULT` (ALTER only).
    pub default: bool,
}

#[derive(Clone, Debug)]
pub enum Statement {
    ShowDatabases,
    ShowMeasurements {
        on: Option<String>,
        with: Option<MeasurementName>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowTagKeys {
        on: Option<String>,
        from: Vec<Source>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowTagValues {
        on: Option<String>,
        from: Vec<Source>,
        key: KeyMatch,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    ShowFieldKeys {
        on: Option<String>,
        from: Vec<Source>,
        limit: usize,
        offset: usize,
    },
    ShowRetentionPolicies {
        on: Option<String>,
    },
    ShowSeries {
        on: Option<String>,
        from: Vec<Source>,
        condition: Option<Expr>,
        limit: usize,
        offset: usize,
    },
    /// `CREATE DATABASE name [WITH …]`; `retention` is `None` without `WITH`.
    CreateDatabase {
        name: String,
        retention: Option<RetentionClauses>,
    },
    /// `ALTER RETENTION POLICY policy ON database …`.
    AlterRetentionPolicy {
        policy: String,
        database: String,
        clauses: RetentionClauses,
    },
    DropDatabase {
        name: String,
    },
    Select(Box<Select>),
}
