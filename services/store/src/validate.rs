//! Request-body validation that reports every problem at once, in the shape FastAPI
//! (pydantic) uses for its 422 answers: `{"type", "loc", "msg", "input"}` per problem.
//!
//! Bodies are parsed into a `serde_json::Value` first and then read field by field, so a
//! field that is absent can be told apart from one that is `null` (the store's update
//! routes give the two different meanings). The two hottest bodies, a span and an enqueue,
//! are first tried in their common shape straight from the bytes (`span`, `api::params`);
//! whatever that reader refuses, every invalid body included, is read here.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{AttemptStatus, RolloutConfig, RolloutMode, RolloutStatus, WorkerStatus};

/// One segment of an error location: a key or an index.
///
/// Model keys are `'static`, so entering a field while a valid body is read costs no
/// allocation; only keys taken from the input (attribute names) are copied, on error.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Loc {
    Key(Cow<'static, str>),
    Index(usize),
}

impl From<&'static str> for Loc {
    fn from(s: &'static str) -> Self {
        Self::Key(Cow::Borrowed(s))
    }
}

impl Loc {
    /// A key taken from the input.
    pub fn key(s: &str) -> Self {
        Self::Key(Cow::Owned(s.to_owned()))
    }
}

/// One validation problem.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<Loc>,
    pub msg: String,
    pub input: Value,
}

/// Collects problems while a body is read; empty means valid.
#[derive(Debug, Default)]
pub struct Errors {
    pub list: Vec<FieldError>,
    path: Vec<Loc>,
}

impl Errors {
    /// Errors located under `root` (`"body"` or `"query"`).
    pub fn new(root: &'static str) -> Self {
        Self {
            list: Vec::new(),
            path: vec![Loc::from(root)],
        }
    }

    /// Records a problem at the current path plus `at`.
    pub fn push(&mut self, at: &[Loc], kind: &'static str, msg: impl Into<String>, input: &Value) {
        let mut loc = self.path.clone();
        loc.extend_from_slice(at);
        self.list.push(FieldError {
            kind,
            loc,
            msg: msg.into(),
            input: input.clone(),
        });
    }

    /// Runs `f` with `seg` appended to the current path.
    pub fn nested<T>(&mut self, seg: Loc, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(seg);
        let out = f(self);
        self.path.pop();
        out
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// Parses a request body; malformed JSON is a `json_invalid` problem as FastAPI reports it.
pub fn parse_body(bytes: &[u8]) -> Result<Value, Vec<FieldError>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![FieldError {
            kind: "missing",
            loc: vec![Loc::from("body")],
            msg: "Field required".into(),
            input: Value::Null,
        }]);
    }
    serde_json::from_slice(bytes).map_err(|err| {
        vec![FieldError {
            kind: "json_invalid",
            loc: vec![
                Loc::from("body"),
                Loc::Index(err.column().saturating_sub(1)),
            ],
            msg: "JSON decode error".into(),
            input: Value::Object(Map::new()),
        }]
    })
}

/// The body as an object; anything else is a `model_attributes_type` problem.
pub fn object<'a>(value: &'a Value, errs: &mut Errors) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            errs.push(
                &[],
                "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from",
                other,
            );
            None
        }
    }
}

/// Reads one field of an object. Absent → `Absent`; present → the converter's verdict.
pub enum Field<T> {
    Absent,
    Null,
    Value(T),
    Invalid,
}

impl<T> Field<T> {
    /// The value, treating `null` and absent alike.
    pub fn into_option(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
    /// Whether the key was present (with any value).
    pub fn present(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

/// Reads `key` from `map`, converting a non-null value with `conv`.
pub fn field<'a, T>(
    map: &'a Map<String, Value>,
    key: &'static str,
    errs: &mut Errors,
    conv: impl FnOnce(&'a Value, &mut Errors) -> Option<T>,
) -> Field<T> {
    match map.get(key) {
        None => Field::Absent,
        Some(Value::Null) => Field::Null,
        Some(v) => match errs.nested(Loc::from(key), |e| conv(v, e)) {
            Some(t) => Field::Value(t),
            None => Field::Invalid,
        },
    }
}

/// A required field that may be `null`.
pub fn required<'a, T>(
    map: &'a Map<String, Value>,
    key: &'static str,
    errs: &mut Errors,
    conv: impl FnOnce(&'a Value, &mut Errors) -> Option<T>,
) -> Option<Option<T>> {
    match field(map, key, errs, conv) {
        Field::Absent => {
            errs.push(
                &[Loc::from(key)],
                "missing",
                "Field required",
                &Value::Object(map.clone()),
            );
            None
        }
        Field::Null => Some(None),
        Field::Value(v) => Some(Some(v)),
        Field::Invalid => None,
    }
}

/// A required, non-null field.
pub fn required_non_null<'a, T>(
    map: &'a Map<String, Value>,
    key: &'static str,
    errs: &mut Errors,
    conv: impl FnOnce(&'a Value, &mut Errors) -> Option<T>,
    null_kind: (&'static str, &'static str),
) -> Option<T> {
    match required(map, key, errs, conv)? {
        Some(v) => Some(v),
        None => {
            errs.push(&[Loc::from(key)], null_kind.0, null_kind.1, &Value::Null);
            None
        }
    }
}

/// An optional field whose `null` means "not given".
pub fn optional<'a, T>(
    map: &'a Map<String, Value>,
    key: &'static str,
    errs: &mut Errors,
    conv: impl FnOnce(&'a Value, &mut Errors) -> Option<T>,
) -> Option<T> {
    field(map, key, errs, conv).into_option()
}

/// The (kind, message) pydantic reports for a `null` where a string is required.
pub const STRING_NULL: (&str, &str) = ("string_type", "Input should be a valid string");
/// The same for numbers.
pub const NUMBER_NULL: (&str, &str) = ("float_type", "Input should be a valid number");
/// The same for integers.
pub const INT_NULL: (&str, &str) = ("int_type", "Input should be a valid integer");
/// The same for objects.
pub const DICT_NULL: (&str, &str) = ("dict_type", "Input should be a valid dictionary");
/// The same for lists.
pub const LIST_NULL: (&str, &str) = ("list_type", "Input should be a valid list");

/// A string.
pub fn string(v: &Value, errs: &mut Errors) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            errs.push(&[], STRING_NULL.0, STRING_NULL.1, other);
            None
        }
    }
}

/// A string, borrowed from the body.
pub fn str_ref<'a>(v: &'a Value, errs: &mut Errors) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        other => {
            errs.push(&[], STRING_NULL.0, STRING_NULL.1, other);
            None
        }
    }
}

/// A number (an integer is accepted and becomes a float, as pydantic does).
pub fn number(v: &Value, errs: &mut Errors) -> Option<f64> {
    match v.as_f64() {
        Some(f) if !v.is_string() => Some(f),
        _ => {
            errs.push(&[], NUMBER_NULL.0, NUMBER_NULL.1, v);
            None
        }
    }
}

/// An integer (a float with no fractional part is accepted, as pydantic does).
pub fn integer(v: &Value, errs: &mut Errors) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if let Some(f) = v.as_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        #[allow(clippy::cast_possible_truncation)]
        return Some(f as i64);
    }
    errs.push(&[], INT_NULL.0, INT_NULL.1, v);
    None
}

/// A boolean.
pub fn boolean(v: &Value, errs: &mut Errors) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            errs.push(&[], "bool_type", "Input should be a valid boolean", other);
            None
        }
    }
}

/// A JSON object, kept as is.
pub fn dict(v: &Value, errs: &mut Errors) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m.clone()),
        other => {
            errs.push(&[], DICT_NULL.0, DICT_NULL.1, other);
            None
        }
    }
}

/// A JSON object, borrowed from the body.
pub fn dict_ref<'a>(v: &'a Value, errs: &mut Errors) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        other => {
            errs.push(&[], DICT_NULL.0, DICT_NULL.1, other);
            None
        }
    }
}

/// A list whose items are converted with `item`.
pub fn list<'a, T>(
    v: &'a Value,
    errs: &mut Errors,
    mut item: impl FnMut(&'a Value, &mut Errors) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Array(items) = v else {
        errs.push(&[], LIST_NULL.0, LIST_NULL.1, v);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, it) in items.iter().enumerate() {
        match errs.nested(Loc::Index(i), |e| item(it, e)) {
            Some(t) => out.push(t),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One of the named values `all` (an `enum` problem listing them otherwise).
pub fn one_of<T: Copy>(
    v: &Value,
    errs: &mut Errors,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Option<T> {
    if let Value::String(s) = v
        && let Some(found) = all.iter().find(|x| name(**x) == s)
    {
        return Some(*found);
    }
    let names: Vec<String> = all.iter().map(|x| format!("'{}'", name(*x))).collect();
    let msg = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("Input should be {} or {last}", rest.join(", "))
        }
        _ => format!("Input should be {}", names.join("")),
    };
    errs.push(&[], "enum", msg, v);
    None
}

/// A rollout status.
pub fn rollout_status(v: &Value, errs: &mut Errors) -> Option<RolloutStatus> {
    one_of(v, errs, RolloutStatus::ALL, RolloutStatus::as_str)
}

/// An attempt status.
pub fn attempt_status(v: &Value, errs: &mut Errors) -> Option<AttemptStatus> {
    one_of(v, errs, AttemptStatus::ALL, AttemptStatus::as_str)
}

/// A worker status.
pub fn worker_status(v: &Value, errs: &mut Errors) -> Option<WorkerStatus> {
    one_of(v, errs, WorkerStatus::ALL, WorkerStatus::as_str)
}

/// A rollout mode.
pub fn rollout_mode(v: &Value, errs: &mut Errors) -> Option<RolloutMode> {
    one_of(v, errs, RolloutMode::ALL, RolloutMode::as_str)
}

/// `"asc"` or `"desc"`; true for descending.
pub fn sort_order(v: &Value, errs: &mut Errors) -> Option<bool> {
    match v.as_str() {
        Some("asc") => Some(false),
        Some("desc") => Some(true),
        _ => {
            errs.push(&[], "literal_error", "Input should be 'asc' or 'desc'", v);
            None
        }
    }
}

/// `"and"` or `"or"`; true for `or`.
pub fn filter_logic(v: &Value, errs: &mut Errors) -> Option<bool> {
    match v.as_str() {
        Some("and") => Some(false),
        Some("or") => Some(true),
        _ => {
            errs.push(&[], "literal_error", "Input should be 'and' or 'or'", v);
            None
        }
    }
}

/// A `RolloutConfig` object (unknown keys ignored).
pub fn rollout_config(v: &Value, errs: &mut Errors) -> Option<RolloutConfig> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let timeout_seconds = optional(map, "timeout_seconds", errs, number);
    let unresponsive_seconds = optional(map, "unresponsive_seconds", errs, number);
    let max_attempts = match field(map, "max_attempts", errs, integer) {
        Field::Absent => 1,
        Field::Null => {
            errs.push(
                &[Loc::from("max_attempts")],
                INT_NULL.0,
                INT_NULL.1,
                &Value::Null,
            );
            1
        }
        Field::Value(n) if n < 1 => {
            errs.push(
                &[Loc::from("max_attempts")],
                "greater_than_equal",
                "Input should be greater than or equal to 1",
                &Value::from(n),
            );
            1
        }
        Field::Value(n) => n,
        Field::Invalid => 1,
    };
    let retry_condition = match field(map, "retry_condition", errs, |v, e| {
        list(v, e, attempt_status)
    }) {
        Field::Value(l) => l,
        Field::Null => {
            errs.push(
                &[Loc::from("retry_condition")],
                LIST_NULL.0,
                LIST_NULL.1,
                &Value::Null,
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    (errs.list.len() == before).then_some(RolloutConfig {
        timeout_seconds,
        unresponsive_seconds,
        max_attempts,
        retry_condition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_defaults_and_bounds() {
        let mut errs = Errors::new("body");
        let cfg = rollout_config(&json!({"timeout_seconds": 100}), &mut errs).unwrap();
        assert_eq!(cfg.timeout_seconds, Some(100.0));
        assert_eq!(cfg.max_attempts, 1);
        assert!(errs.is_empty());

        let mut errs = Errors::new("body");
        assert!(rollout_config(&json!({"max_attempts": 0}), &mut errs).is_none());
        assert_eq!(errs.list[0].kind, "greater_than_equal");
        assert_eq!(
            errs.list[0].loc,
            vec![Loc::from("body"), Loc::from("max_attempts")]
        );
    }

    #[test]
    fn enum_errors_list_the_choices() {
        let mut errs = Errors::new("body");
        assert!(worker_status(&json!("lost"), &mut errs).is_none());
        assert_eq!(
            errs.list[0].msg,
            "Input should be 'idle', 'busy' or 'unknown'"
        );
    }

    #[test]
    fn malformed_json_is_json_invalid() {
        let err = parse_body(b"{nope").unwrap_err();
        assert_eq!(err[0].kind, "json_invalid");
        assert_eq!(parse_body(b"").unwrap_err()[0].kind, "missing");
    }

    #[test]
    fn absent_null_and_value_are_distinct() {
        let body = json!({"a": null, "b": "x"});
        let map = body.as_object().unwrap();
        let mut errs = Errors::new("body");
        assert!(matches!(field(map, "a", &mut errs, string), Field::Null));
        assert!(matches!(field(map, "b", &mut errs, string), Field::Value(ref s) if s == "x"));
        assert!(matches!(field(map, "c", &mut errs, string), Field::Absent));
        assert!(errs.is_empty());
    }
}
