//! Aggregates pushed into the shards' scans ([`crate::store::aggregate`]):
//! which statements qualify, the request, merging the shards' buckets and
//! turning a bucket into the value the row path's reducer would give.
//!
//! A statement qualifies when every aggregate is one the scan computes
//! (`count` of any field; `sum`, `mean`, `min`, `max`, `first`, `last`,
//! `spread` of numeric fields — `first`/`last` of strings break ties by
//! the merge order of rows, which buckets do not keep), its WHERE clause
//! (time aside) tests tags only, so the shards can apply it exactly, and it
//! buckets in UTC (`tz()` alignment is the row path's). Everything else
//! (`percentile`, `median`, `mode`, `distinct`, `stddev`, conditions on
//! fields) reduces rows on the coordinating shard as before, bounded by the
//! row limit; a qualifying statement reads any number of rows.

use std::collections::{BTreeMap, BTreeSet};

use super::{plan_expr, BaseCall, Column, Schema, Select, Slot};
use crate::query::ast::{BinaryOp, Expr, RefKind};
use crate::query::time as qtime;
use crate::query::Limits;
use crate::store::{
    AggregateRequest, Bucket, FieldAggregate, FieldType, NumericStats, ScanResponse, Stats,
    TagFilter, Value,
};

/// Where a pushed-down aggregate reads.
pub(super) struct Target<'a> {
    pub database: &'a str,
    pub measurement: &'a str,
    pub tag_filter: &'a TagFilter,
    pub group_keys: &'a BTreeSet<String>,
    pub time_min_ns: i64,
    pub time_max_ns: i64,
    /// The fields the statement reads.
    pub fields: &'a [String],
    pub limits: Limits,
}

/// Tags of a group.
type Tags = Vec<(String, String)>;

/// The shards' request for this statement over one measurement, or `None`
/// when it does not qualify.
pub(super) fn request(
    select: &Select,
    zone: &qtime::Zone,
    columns: &[Column],
    schema: &Schema,
    condition: Option<&Expr>,
    target: Target<'_>,
) -> Option<AggregateRequest> {
    if !zone.is_utc() || condition.is_some_and(|c| !tests_tags_only(c, schema)) {
        return None;
    }
    let mut bases: Vec<BaseCall> = Vec::new();
    let mut transforms = Vec::new();
    let interval = select.group_time.map(|(i, _)| i);
    for column in columns {
        plan_expr(&column.expr, interval, &mut bases, &mut transforms);
    }
    let qualifies = |base: &BaseCall| {
        let numeric = matches!(
            schema.fields.get(&base.field),
            Some(FieldType::Float | FieldType::Integer | FieldType::Unsigned)
        );
        match base.function.as_str() {
            "count" => true,
            "sum" | "mean" | "min" | "max" | "first" | "last" | "spread" => numeric,
            _ => false,
        }
    };
    if bases.is_empty() || !bases.iter().all(qualifies) {
        return None;
    }
    Some(AggregateRequest {
        database: target.database.to_string(),
        measurement: target.measurement.to_string(),
        tag_filter: target.tag_filter.clone(),
        time_min_ns: target.time_min_ns,
        time_max_ns: target.time_max_ns,
        fields: target.fields.to_vec(),
        group_keys: target.group_keys.iter().cloned().collect(),
        window: select.group_time,
        sums: bases
            .iter()
            .any(|base| matches!(base.function.as_str(), "sum" | "mean")),
        bucket_limit: target.limits.buckets_max,
        row_limit: target.limits.rows_max,
        deadline: crate::store::Deadline::NONE,
    })
}

/// Is `expr` made only of comparisons of a tag with a string or regex
/// (joined by AND/OR)? Then the shards' tag filter is the whole condition.
fn tests_tags_only(expr: &Expr, schema: &Schema) -> bool {
    match expr {
        Expr::Paren(inner) => tests_tags_only(inner, schema),
        Expr::Binary {
            op: BinaryOp::And | BinaryOp::Or,
            lhs,
            rhs,
        } => tests_tags_only(lhs, schema) && tests_tags_only(rhs, schema),
        Expr::Binary { op, lhs, rhs } => {
            let comparison = matches!(
                (op, rhs.as_ref()),
                (BinaryOp::Eq | BinaryOp::NotEq, Expr::String(_))
                    | (BinaryOp::Match | BinaryOp::NotMatch, Expr::Regex(_))
            );
            let tag = match lhs.as_ref() {
                Expr::VarRef { name, kind } => {
                    *kind != Some(RefKind::Field)
                        && schema.tag_keys.contains(name)
                        && !schema.fields.contains_key(name)
                }
                _ => false,
            };
            comparison && tag
        }
        _ => false,
    }
}

/// The shards' groups merged by key (key order), each group's buckets in
/// time order.
pub(super) fn merge(responses: Vec<ScanResponse>) -> BTreeMap<Tags, Vec<Bucket>> {
    let mut groups: BTreeMap<Tags, BTreeMap<i64, Vec<FieldAggregate>>> = BTreeMap::new();
    for response in responses {
        let ScanResponse::Aggregates(list) = response else {
            continue;
        };
        for group in list {
            let buckets = groups.entry(group.key).or_default();
            for bucket in group.buckets {
                match buckets.entry(bucket.start_ns) {
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(bucket.fields);
                    }
                    std::collections::btree_map::Entry::Occupied(mut entry) => {
                        for (mine, theirs) in entry.get_mut().iter_mut().zip(&bucket.fields) {
                            mine.merge(theirs);
                        }
                    }
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, buckets)| {
            let buckets = buckets
                .into_iter()
                .map(|(start_ns, fields)| Bucket { start_ns, fields })
                .collect();
            (key, buckets)
        })
        .collect()
}

/// A bucket's statistics as values of the field's type.
struct Values {
    sum: Value,
    float_sum: f64,
    min: (Value, i64),
    max: (Value, i64),
    first: (i64, Value),
    last: (i64, Value),
    /// `spread` as the row path computes it (integers stay integers).
    spread: Value,
}

fn values<T: Copy>(stats: &Stats<T>, wrap: fn(T) -> Value, spread: Value) -> Values {
    Values {
        sum: wrap(stats.sum),
        float_sum: stats.float_sum,
        min: (wrap(stats.min.0), stats.min.1),
        max: (wrap(stats.max.0), stats.max.1),
        first: (stats.first.0, wrap(stats.first.1)),
        last: (stats.last.0, wrap(stats.last.1)),
        spread,
    }
}

/// What `base`'s reducer gives for the points `field` summarises (at
/// least one).
pub(super) fn slot(base: &BaseCall, field: &FieldAggregate) -> Slot {
    let stats = field.stats.as_ref().map(|stats| match stats {
        NumericStats::Float(s) => values(s, Value::Float, Value::Float(s.max.0 - s.min.0)),
        NumericStats::Integer(s) => values(
            s,
            Value::Integer,
            Value::Integer(s.max.0.wrapping_sub(s.min.0)),
        ),
        NumericStats::Unsigned(s) => values(
            s,
            Value::Unsigned,
            Value::Float(s.max.0 as f64 - s.min.0 as f64),
        ),
    });
    let first_time = stats.as_ref().map_or(0, |s| s.first.0);
    if base.function == "count" {
        return Some((Value::Integer(field.count as i64), first_time));
    }
    let stats = stats?;
    Some(match base.function.as_str() {
        "sum" => (stats.sum, first_time),
        "mean" => (
            Value::Float(stats.float_sum / field.count as f64),
            first_time,
        ),
        "min" => stats.min,
        "max" => stats.max,
        "first" => (stats.first.1, stats.first.0),
        "last" => (stats.last.1, stats.last.0),
        "spread" => (stats.spread, first_time),
        _ => return None,
    })
}
