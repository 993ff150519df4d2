//! The SQL of a query over rollouts — its `WHERE` clause and its `ORDER BY` — written once
//! for both SQL backends. A backend says only how its dialect writes a parameter, a list
//! membership and a substring test, and which column holds creation order; it binds the
//! [`SqlArg`]s in its own types.
//!
//! Every filter and order reads a column (`status`, `mode`, `start_time`, `end_time`,
//! `rollout_id`), never the JSON document, so that each can use an index: a page of a
//! filtered or sorted list of 100 000 rollouts reads its page, not the history.

use crate::persist::{RolloutColumn, RolloutFilter, RolloutOrder};

/// A parameter of a rollout query.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    Text(String),
    Real(f64),
    /// A list of strings, one parameter.
    Texts(Vec<String>),
}

/// What differs between the SQL dialects the queries are written in.
pub trait Dialect {
    /// The column of creation order in the rollouts table.
    const CREATED: &'static str;

    /// The placeholder of the `n`th parameter (counted from 1).
    fn param(n: usize) -> String;

    /// `column` is one of the strings of the list parameter `param`.
    fn in_list(column: &str, param: &str) -> String;

    /// `column` contains the text of parameter `param`.
    fn contains(column: &str, param: &str) -> String;
}

/// SQLite's dialect: `?N` parameters, a list as a JSON array read with `json_each`, and the
/// row id as creation order.
pub struct Sqlite;

impl Dialect for Sqlite {
    const CREATED: &'static str = "rowid";

    fn param(n: usize) -> String {
        format!("?{n}")
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({param}))")
    }

    fn contains(column: &str, param: &str) -> String {
        format!("instr({column}, {param}) > 0")
    }
}

/// Postgres's dialect: `$N` parameters, a list as a `text[]`, and the `created` sequence
/// column as creation order.
pub struct Postgres;

impl Dialect for Postgres {
    const CREATED: &'static str = "created";

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} = ANY({param})")
    }

    fn contains(column: &str, param: &str) -> String {
        format!("strpos({column}, {param}) > 0")
    }
}

/// The `WHERE` clause of `filter` over the rollouts table aliased `r` (empty when nothing
/// is filtered) and its parameters in order.
pub fn rollout_filter<D: Dialect>(filter: RolloutFilter<'_>) -> (String, Vec<SqlArg>) {
    let mut conds = Vec::new();
    let mut args = Vec::new();
    let mut push = |arg: SqlArg| {
        args.push(arg);
        D::param(args.len())
    };
    // One value is an equality, which an index on (column, creation) answers in order.
    let mut one_of = |column: &str, values: Vec<String>| match <[String; 1]>::try_from(values) {
        Ok([value]) => format!("{column} = {}", push(SqlArg::Text(value))),
        Err(values) => D::in_list(column, &push(SqlArg::Texts(values))),
    };
    if let Some(statuses) = filter.status_in {
        let names = statuses.iter().map(|s| s.as_str().to_owned()).collect();
        conds.push(one_of("r.status", names));
    }
    if let Some(ids) = filter.rollout_id_in {
        conds.push(one_of("r.rollout_id", ids.to_vec()));
    }
    if let Some(modes) = filter.mode_in {
        let names = modes.iter().map(|m| m.as_str().to_owned()).collect();
        conds.push(one_of("r.mode", names));
    }
    if let Some(part) = filter.rollout_id_contains {
        conds.push(D::contains(
            "r.rollout_id",
            &push(SqlArg::Text(part.to_owned())),
        ));
    }
    if let Some(t) = filter.started_from {
        conds.push(format!("r.start_time >= {}", push(SqlArg::Real(t))));
    }
    if let Some(t) = filter.started_before {
        conds.push(format!("r.start_time < {}", push(SqlArg::Real(t))));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(
            "WHERE {}",
            conds.join(if filter.any { " OR " } else { " AND " })
        )
    };
    (clause, args)
}

/// The `ORDER BY` terms of `order` over the rollouts table aliased `r`: the key, then
/// creation order ascending for equal keys.
pub fn rollout_order<D: Dialect>(order: RolloutOrder) -> String {
    let dir = if order.descending { "DESC" } else { "ASC" };
    let created = format!("r.{}", D::CREATED);
    let key = match order.by {
        RolloutColumn::Created => return format!("{created} {dir}"),
        RolloutColumn::RolloutId => format!("r.rollout_id {dir}"),
        RolloutColumn::Status => format!("r.status {dir}"),
        RolloutColumn::StartTime => format!("r.start_time {dir}"),
        // No end is later than every end.
        RolloutColumn::EndTime if order.descending => "r.end_time DESC NULLS FIRST".to_owned(),
        RolloutColumn::EndTime => "r.end_time ASC NULLS LAST".to_owned(),
    };
    format!("{key}, {created} ASC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RolloutMode, RolloutStatus};

    #[test]
    fn one_value_is_an_equality_and_parameters_are_numbered_in_order() {
        let statuses = [RolloutStatus::Running];
        let modes = [RolloutMode::Train, RolloutMode::Val];
        let filter = RolloutFilter {
            status_in: Some(&statuses),
            mode_in: Some(&modes),
            rollout_id_contains: Some("ro-"),
            started_from: Some(1.5),
            ..RolloutFilter::default()
        };
        let (sql, args) = rollout_filter::<Postgres>(filter);
        assert_eq!(
            sql,
            "WHERE r.status = $1 AND r.mode = ANY($2) AND strpos(r.rollout_id, $3) > 0 \
             AND r.start_time >= $4"
        );
        assert_eq!(
            args,
            [
                SqlArg::Text("running".into()),
                SqlArg::Texts(vec!["train".into(), "val".into()]),
                SqlArg::Text("ro-".into()),
                SqlArg::Real(1.5),
            ]
        );
    }

    #[test]
    fn any_joins_with_or_and_nothing_filters_nothing() {
        let ids = ["a".to_owned(), "b".to_owned()];
        let filter = RolloutFilter {
            rollout_id_in: Some(&ids),
            started_before: Some(2.0),
            any: true,
            ..RolloutFilter::default()
        };
        let (sql, _) = rollout_filter::<Postgres>(filter);
        assert_eq!(sql, "WHERE r.rollout_id = ANY($1) OR r.start_time < $2");
        assert_eq!(
            rollout_filter::<Postgres>(RolloutFilter::default()),
            (String::new(), vec![])
        );
    }

    #[test]
    fn equal_keys_keep_creation_order_and_no_end_is_last() {
        let order = |by, descending| rollout_order::<Postgres>(RolloutOrder { by, descending });
        assert_eq!(order(RolloutColumn::Created, true), "r.created DESC");
        assert_eq!(
            rollout_order::<Sqlite>(RolloutOrder {
                by: RolloutColumn::Status,
                descending: false
            }),
            "r.status ASC, r.rowid ASC"
        );
        assert_eq!(
            order(RolloutColumn::StartTime, true),
            "r.start_time DESC, r.created ASC"
        );
        assert_eq!(
            order(RolloutColumn::EndTime, false),
            "r.end_time ASC NULLS LAST, r.created ASC"
        );
        assert_eq!(
            order(RolloutColumn::EndTime, true),
            "r.end_time DESC NULLS FIRST, r.created ASC"
        );
    }
}
