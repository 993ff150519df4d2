//! Request models of the HTTP API, read from JSON bodies or query strings into the store's
//! input types. Query strings are first turned into the JSON object the `POST .../search`
//! twin of the route would receive, so each model is read by one function.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::ApiError;
use crate::core::{
    AttemptPatch, NewRollout, PageRequest, ResourcesQuery, RolloutPatch, RolloutQuery, SpanQuery,
    WorkerQuery,
};
use crate::json::{CanonicalJson, Text, set_once, uncommon};
use crate::model::{Json, NamedResources, RolloutMode};
use crate::validate::{
    self, Errors, Field, Loc, field, object, optional, required, required_non_null,
};

/// Parses a required JSON body with `read`.
pub fn body<T>(
    bytes: &[u8],
    read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
) -> Result<T, ApiError> {
    let value = validate::parse_body(bytes).map_err(ApiError::Validation)?;
    run(&value, "body", read)
}

/// Parses a JSON body that may be absent (empty), reading `{}` in its place.
pub fn optional_body<T>(
    bytes: &[u8],
    read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return run(&Value::Object(Map::new()), "body", read);
    }
    let value = validate::parse_body(bytes).map_err(ApiError::Validation)?;
    if value.is_null() {
        return run(&Value::Object(Map::new()), "body", read);
    }
    run(&value, "body", read)
}

/// Reads a query string as the object `read` expects; `lists` name repeatable keys.
pub fn query<T>(
    raw: Option<&str>,
    lists: &[&str],
    read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
) -> Result<T, ApiError> {
    let mut map = Map::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let key = key.into_owned();
        let value = value.into_owned();
        if lists.contains(&key.as_str()) {
            match map.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(Value::String(value)),
                _ => unreachable!("list keys only hold arrays"),
            }
            continue;
        }
        // Query values are strings; numeric fields are converted as FastAPI would.
        let converted = match key.as_str() {
            "limit" | "offset" => value
                .parse::<i64>()
                .map_or_else(|_| Value::String(value.clone()), Value::from),
            _ => Value::String(value),
        };
        map.insert(key, converted);
    }
    run(&Value::Object(map), "query", read)
}

fn run<T>(
    value: &Value,
    root: &'static str,
    read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
) -> Result<T, ApiError> {
    let mut errs = Errors::new(root);
    match read(value, &mut errs) {
        Some(v) if errs.is_empty() => Ok(v),
        _ => Err(ApiError::Validation(errs.list)),
    }
}

/// Any JSON value, kept as text.
pub fn to_json(value: &Value) -> Json {
    Arc::from(serde_json::value::to_raw_value(value).expect("a serde_json value always serializes"))
}

/// A JSON object kept as text.
fn json_object(v: &Value, errs: &mut Errors) -> Option<Json> {
    validate::dict(v, errs).map(|_| to_json(v))
}

/// `RolloutRequest` / `EnqueueRolloutRequest`: the rollout and an optional worker id.
pub fn new_rollout(v: &Value, errs: &mut Errors) -> Option<(NewRollout, Option<String>)> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let input = required(map, "input", errs, |v, _| Some(to_json(v)));
    let mode = optional(map, "mode", errs, validate::rollout_mode);
    let resources_id = optional(map, "resources_id", errs, validate::string);
    let config = optional(map, "config", errs, validate::rollout_config);
    let metadata = optional(map, "metadata", errs, json_object);
    let worker_id = optional(map, "worker_id", errs, validate::string);
    if errs.list.len() != before {
        return None;
    }
    let input = input?.unwrap_or_else(|| to_json(&Value::Null));
    Some((
        NewRollout {
            input,
            mode,
            resources_id,
            config,
            metadata,
            rollout_id: None,
            v1: None,
        },
        worker_id,
    ))
}

/// `{"rollouts": [EnqueueRolloutRequest, ...]}`.
pub fn enqueue_many(v: &Value, errs: &mut Errors) -> Option<Vec<NewRollout>> {
    let map = object(v, errs)?;
    required_non_null(
        map,
        "rollouts",
        errs,
        |v, e| validate::list(v, e, |item, e| new_rollout(item, e).map(|(r, _)| r)),
        validate::LIST_NULL,
    )
}

/// `{"rollouts": [...]}` of an enqueue: the common shape read straight from the bytes,
/// anything else (and every invalid body) through [`enqueue_many`], which reports problems.
pub fn enqueue_many_body(bytes: &[u8]) -> Result<Vec<NewRollout>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(EnqueueCommon(rollouts)) => Ok(rollouts),
        Err(_) => body(bytes, enqueue_many),
    }
}

/// An enqueue body with no repeated keys whose values all pass as they are (nothing to
/// coerce or report); deserializing fails on anything else.
struct EnqueueCommon(Vec<NewRollout>);

/// One rollout of [`EnqueueCommon`].
struct RolloutCommon(NewRollout);

impl<'de> Deserialize<'de> for EnqueueCommon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnqueueCommon;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an enqueue request")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut rollouts = None;
                while let Some(Text(key)) = map.next_key()? {
                    if key == "rollouts" {
                        let items: Vec<RolloutCommon> = map.next_value()?;
                        set_once(&mut rollouts, items)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                let items = rollouts.ok_or_else(|| uncommon("no rollouts"))?;
                Ok(EnqueueCommon(items.into_iter().map(|r| r.0).collect()))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RolloutCommon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RolloutCommon;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rollout")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut input, mut mode, mut resources_id) = (None, None, None);
                let (mut config, mut metadata, mut worker_id) = (None, None, None);
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "input" => set_once(&mut input, map.next_value_seed(CanonicalJson)?)?,
                        // Read as a string: serde's enum form would also take `{"train": null}`.
                        "mode" => set_once(&mut mode, map.next_value::<Option<Text<'de>>>()?)?,
                        "resources_id" => {
                            set_once(&mut resources_id, map.next_value::<Option<Text<'de>>>()?)?;
                        }
                        "config" => set_once(&mut config, map.next_value::<Option<Value>>()?)?,
                        "metadata" => {
                            set_once(&mut metadata, map.next_value_seed(CanonicalJson)?)?;
                        }
                        "worker_id" => {
                            set_once(&mut worker_id, map.next_value::<Option<Text<'de>>>()?)?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let config = match config.flatten() {
                    None => None,
                    Some(v) => Some(
                        validate::rollout_config(&v, &mut Errors::new("body"))
                            .ok_or_else(|| uncommon("config"))?,
                    ),
                };
                let metadata = match metadata {
                    Some(m) if m.get() == "null" => None,
                    Some(m) if m.get().starts_with('{') => Some(m),
                    None => None,
                    Some(_) => return Err(uncommon("metadata")),
                };
                let mode = match mode.flatten() {
                    None => None,
                    Some(Text(name)) => {
                        Some(RolloutMode::parse(&name).ok_or_else(|| uncommon("mode"))?)
                    }
                };
                Ok(RolloutCommon(NewRollout {
                    input: input.ok_or_else(|| uncommon("no input"))?,
                    mode,
                    resources_id: resources_id.flatten().map(|t| t.0.into_owned()),
                    config,
                    metadata,
                    rollout_id: None,
                    v1: None,
                }))
            }
        }
        d.deserialize_map(V)
    }
}

/// `{"limit": 1, "worker_id": null}` of a dequeue.
pub fn dequeue(v: &Value, errs: &mut Errors) -> Option<(i64, Option<String>)> {
    let map = object(v, errs)?;
    let limit = match field(map, "limit", errs, validate::integer) {
        Field::Value(n) => n,
        Field::Absent => 1,
        Field::Null => {
            errs.push(
                &[Loc::from("limit")],
                validate::INT_NULL.0,
                validate::INT_NULL.1,
                &Value::Null,
            );
            1
        }
        Field::Invalid => 1,
    };
    let worker_id = optional(map, "worker_id", errs, validate::string);
    Some((limit, worker_id))
}

/// `{"worker_id": ...}` of a new attempt.
pub fn worker_id(v: &Value, errs: &mut Errors) -> Option<Option<String>> {
    let map = object(v, errs)?;
    Some(optional(map, "worker_id", errs, validate::string))
}

/// Pagination fields common to every query, with the route's default sort.
fn page(map: &Map<String, Value>, errs: &mut Errors, default_sort: Option<&str>) -> PageRequest {
    let int_or = |errs: &mut Errors, key: &'static str, default: i64| match field(
        map,
        key,
        errs,
        validate::integer,
    ) {
        Field::Value(n) => n,
        Field::Null => {
            errs.push(
                &[Loc::from(key)],
                validate::INT_NULL.0,
                validate::INT_NULL.1,
                &Value::Null,
            );
            default
        }
        _ => default,
    };
    let limit = int_or(errs, "limit", -1);
    let offset = int_or(errs, "offset", 0);
    let sort_by = match field(map, "sort_by", errs, validate::string) {
        Field::Value(s) => Some(s),
        Field::Null => None,
        _ => default_sort.map(str::to_owned),
    };
    let descending = optional(map, "sort_order", errs, validate::sort_order).unwrap_or(false);
    PageRequest {
        limit,
        offset,
        sort_by,
        descending,
    }
}

/// The 400s of upstream's `_validate_paginated_request`.
pub fn check_page(page: &PageRequest, fields: &[&str]) -> Result<(), ApiError> {
    if let Some(sort_by) = &page.sort_by
        && !fields.contains(&sort_by.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid sort_by: {sort_by}, allowed fields are: {}",
            fields.join(", ")
        )));
    }
    if page.limit == 0 || page.limit < -1 {
        return Err(ApiError::BadRequest(
            "Limit must be greater than 0 or -1 for no limit".into(),
        ));
    }
    if page.offset < 0 {
        return Err(ApiError::BadRequest(
            "Offset must be greater than or equal to 0".into(),
        ));
    }
    Ok(())
}

fn filter_logic(map: &Map<String, Value>, errs: &mut Errors) -> bool {
    optional(map, "filter_logic", errs, validate::filter_logic).unwrap_or(false)
}

/// `QueryRolloutsRequest`.
pub fn rollout_query(v: &Value, errs: &mut Errors) -> Option<RolloutQuery> {
    let map = object(v, errs)?;
    Some(RolloutQuery {
        status_in: optional(map, "status_in", errs, |v, e| {
            validate::list(v, e, validate::rollout_status)
        }),
        rollout_id_in: optional(map, "rollout_id_in", errs, |v, e| {
            validate::list(v, e, validate::string)
        }),
        rollout_id_contains: optional(map, "rollout_id_contains", errs, validate::string),
        any: filter_logic(map, errs),
        page: page(map, errs, None),
        ..RolloutQuery::default()
    })
}

/// `QueryAttemptsRequest`.
pub fn attempt_query(v: &Value, errs: &mut Errors) -> Option<PageRequest> {
    let map = object(v, errs)?;
    Some(page(map, errs, Some("sequence_id")))
}

/// `QueryWorkersRequest`.
pub fn worker_query(v: &Value, errs: &mut Errors) -> Option<WorkerQuery> {
    let map = object(v, errs)?;
    Some(WorkerQuery {
        status_in: optional(map, "status_in", errs, |v, e| {
            validate::list(v, e, validate::worker_status)
        }),
        worker_id_contains: optional(map, "worker_id_contains", errs, validate::string),
        any: filter_logic(map, errs),
        page: page(map, errs, None),
    })
}

/// `QueryResourcesRequest`.
pub fn resources_query(v: &Value, errs: &mut Errors) -> Option<ResourcesQuery> {
    let map = object(v, errs)?;
    Some(ResourcesQuery {
        resources_id: optional(map, "resources_id", errs, validate::string),
        resources_id_contains: optional(map, "resources_id_contains", errs, validate::string),
        page: page(map, errs, None),
    })
}

/// `QuerySpansRequest`.
pub fn span_query(v: &Value, errs: &mut Errors) -> Option<SpanQuery> {
    let map = object(v, errs)?;
    let rollout_id = required_non_null(
        map,
        "rollout_id",
        errs,
        validate::string,
        validate::STRING_NULL,
    );
    let s = |errs: &mut Errors, key: &'static str| optional(map, key, errs, validate::string);
    let q = SpanQuery {
        rollout_id: String::new(),
        attempt_id: s(errs, "attempt_id"),
        trace_id: s(errs, "trace_id"),
        trace_id_contains: s(errs, "trace_id_contains"),
        span_id: s(errs, "span_id"),
        span_id_contains: s(errs, "span_id_contains"),
        parent_id: s(errs, "parent_id"),
        parent_id_contains: s(errs, "parent_id_contains"),
        name: s(errs, "name"),
        name_contains: s(errs, "name_contains"),
        any: filter_logic(map, errs),
        page: page(map, errs, Some("sequence_id")),
    };
    Some(SpanQuery {
        rollout_id: rollout_id?,
        ..q
    })
}

/// `{"rollout_id", "attempt_id"}` of a sequence-id request.
pub fn sequence_request(v: &Value, errs: &mut Errors) -> Option<(String, String)> {
    let map = object(v, errs)?;
    let r = required_non_null(
        map,
        "rollout_id",
        errs,
        validate::string,
        validate::STRING_NULL,
    );
    let a = required_non_null(
        map,
        "attempt_id",
        errs,
        validate::string,
        validate::STRING_NULL,
    );
    Some((r?, a?))
}

/// `{"rollout_ids": [...], "timeout": x}` of a wait.
pub fn wait_request(v: &Value, errs: &mut Errors) -> Option<(Vec<String>, Option<f64>)> {
    let map = object(v, errs)?;
    let ids = required_non_null(
        map,
        "rollout_ids",
        errs,
        |v, e| validate::list(v, e, validate::string),
        validate::LIST_NULL,
    );
    let timeout = optional(map, "timeout", errs, validate::number);
    Some((ids?, timeout))
}

/// The 400 upstream answers for an explicit `null` where only omission is allowed.
fn null_error(field: &str) -> ApiError {
    ApiError::BadRequest(format!("{field} is invalid; it cannot be a null value."))
}

/// `UpdateRolloutRequest`: absent fields stay, `null` clears the nullable ones.
pub fn rollout_patch(
    bytes: &[u8],
    flat: bool,
) -> Result<(RolloutPatch, Map<String, Value>), ApiError> {
    let value = validate::parse_body(bytes).map_err(ApiError::Validation)?;
    let mut errs = Errors::new("body");
    let Some(map) = object(&value, &mut errs).cloned() else {
        return Err(ApiError::Validation(errs.list));
    };
    let mut patch = RolloutPatch::default();
    if let Some(v) = map.get("input") {
        patch.input = Some(to_json(v));
    }
    patch.mode = match field(&map, "mode", &mut errs, validate::rollout_mode) {
        Field::Value(m) => Some(Some(m)),
        Field::Null => Some(None),
        _ => None,
    };
    patch.resources_id = match field(&map, "resources_id", &mut errs, validate::string) {
        Field::Value(s) => Some(Some(s)),
        Field::Null => Some(None),
        _ => None,
    };
    patch.metadata = match field(&map, "metadata", &mut errs, json_object) {
        Field::Value(m) => Some(Some(m)),
        Field::Null if flat => {
            errs.push(
                &[Loc::from("metadata")],
                validate::DICT_NULL.0,
                validate::DICT_NULL.1,
                &Value::Null,
            );
            None
        }
        Field::Null => Some(None),
        _ => None,
    };
    let mut nulls = Vec::new();
    patch.status = match field(&map, "status", &mut errs, validate::rollout_status) {
        Field::Value(s) => Some(s),
        Field::Null => {
            nulls.push("status");
            None
        }
        _ => None,
    };
    patch.config = match field(&map, "config", &mut errs, validate::rollout_config) {
        Field::Value(c) => Some(c),
        Field::Null => {
            nulls.push("config");
            None
        }
        _ => None,
    };
    null_fields(errs, &nulls, flat)?;
    Ok((patch, map))
}

/// `UpdateAttemptRequest`: absent fields stay; `null` is refused.
pub fn attempt_patch(
    bytes: &[u8],
    flat: bool,
) -> Result<(AttemptPatch, Map<String, Value>), ApiError> {
    let value = validate::parse_body(bytes).map_err(ApiError::Validation)?;
    let mut errs = Errors::new("body");
    let Some(map) = object(&value, &mut errs).cloned() else {
        return Err(ApiError::Validation(errs.list));
    };
    let mut nulls = Vec::new();
    let mut take = |f: Field<_>, name: &'static str| match f {
        Field::Value(v) => Some(v),
        Field::Null => {
            nulls.push(name);
            None
        }
        _ => None,
    };
    let status = take(
        field(&map, "status", &mut errs, |v, e| {
            validate::attempt_status(v, e).map(|s| Value::String(s.as_str().into()))
        }),
        "status",
    );
    let worker_id = take(
        field(&map, "worker_id", &mut errs, |v, e| {
            validate::string(v, e).map(Value::String)
        }),
        "worker_id",
    );
    let heartbeat = take(
        field(&map, "last_heartbeat_time", &mut errs, |v, e| {
            validate::number(v, e).map(Value::from)
        }),
        "last_heartbeat_time",
    );
    let metadata = take(
        field(&map, "metadata", &mut errs, |v, e| {
            validate::dict(v, e).map(Value::Object)
        }),
        "metadata",
    );
    null_fields(errs, &nulls, flat)?;
    let patch = AttemptPatch {
        status: status.and_then(|s| serde_json::from_value(s).ok()),
        worker_id: worker_id.and_then(|w| w.as_str().map(str::to_owned)),
        last_heartbeat_time: heartbeat.and_then(|h| h.as_f64()),
        metadata: metadata.map(|m| to_json(&m)),
    };
    Ok((patch, map))
}

/// Turns the collected problems into the error each protocol gives: 422 for type errors,
/// then 400 (current protocol) or 422 (flat protocol) for forbidden `null`s.
fn null_fields(mut errs: Errors, nulls: &[&'static str], flat: bool) -> Result<(), ApiError> {
    if flat {
        for name in nulls {
            errs.push(
                &[Loc::from(*name)],
                "nullable_error",
                "Input should not be None",
                &Value::Null,
            );
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs.list));
    }
    match nulls.first() {
        Some(name) if !flat => Err(null_error(name)),
        _ => Ok(()),
    }
}

/// `UpdateWorkerRequest`: `Ok(None)` for a bare heartbeat.
pub fn worker_update(bytes: &[u8]) -> Result<Option<Json>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = validate::parse_body(bytes).map_err(ApiError::Validation)?;
    if value.is_null() {
        return Ok(None);
    }
    let mut errs = Errors::new("body");
    let Some(map) = object(&value, &mut errs) else {
        return Err(ApiError::Validation(errs.list));
    };
    match field(map, "heartbeat_stats", &mut errs, json_object) {
        Field::Value(stats) => Ok(Some(stats)),
        Field::Null => Err(null_error("heartbeat_stats")),
        Field::Absent => Ok(None),
        Field::Invalid => Err(ApiError::Validation(errs.list)),
    }
}

/// `NamedResources`: a mapping of name to a tagged resource.
pub fn named_resources(v: &Value, errs: &mut Errors) -> Option<NamedResources> {
    let map = validate::dict(v, errs)?;
    let mut out = NamedResources::new();
    for (name, resource) in map {
        let tag = resource.get("resource_type").and_then(Value::as_str);
        if !matches!(tag, Some("llm" | "proxy_llm" | "prompt_template")) {
            errs.push(
                &[Loc::key(&name)],
                "union_tag_invalid",
                format!(
                    "Input tag '{}' found using 'resource_type' does not match any of the expected tags: 'llm', 'proxy_llm', 'prompt_template'",
                    tag.unwrap_or_default()
                ),
                &resource,
            );
            continue;
        }
        match serde_json::from_value(resource.clone()) {
            Ok(r) => {
                out.insert(name, r);
            }
            Err(err) => errs.push(
                &[Loc::key(&name)],
                "value_error",
                err.to_string(),
                &resource,
            ),
        }
    }
    errs.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the checked way makes of a body, as comparable text.
    fn checked(bytes: &[u8]) -> Option<String> {
        body(bytes, enqueue_many).ok().map(|r| format!("{r:?}"))
    }

    /// Random enqueue bodies: whatever the common-shape reader accepts, it reads exactly as
    /// the checked way does, and it accepts the usual bodies.
    #[test]
    fn common_shape_reads_as_the_checked_way() {
        fn any(rng: &mut fastrand::Rng, depth: u32) -> String {
            match rng.u8(0..9) {
                0 => "null".into(),
                1 => rng.bool().to_string(),
                2 => rng.i64(..).to_string(),
                3 => format!("{}", rng.f64() * 1e6),
                4 => "1.50e2".into(),
                5 if depth > 0 => {
                    let items: Vec<String> =
                        (0..rng.usize(0..3)).map(|_| any(rng, depth - 1)).collect();
                    format!("[ {} ]", items.join(" , "))
                }
                6 | 7 if depth > 0 => {
                    let n = rng.usize(0..4);
                    let items: Vec<String> = (0..n)
                        // Now and then a key twice.
                        .map(|i| format!("\"k{}\": {}", i % 3, any(rng, depth - 1)))
                        .collect();
                    format!("{{{}}}", items.join(","))
                }
                _ => ["\"q\"", "\"\\u00e9\\n\"", "\"日本\"", "\"\""][rng.usize(0..4)].into(),
            }
        }
        let mut rng = fastrand::Rng::with_seed(agl_common::fuzzing::seed(0xe2c0));
        let (mut common, mut valid) = (0, 0);
        for _ in 0..agl_common::fuzzing::cases(3000) {
            let n = rng.usize(0..4);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let mut fields = vec![format!("\"input\": {}", any(&mut rng, 3))];
                    let mut maybe = |key: &str, values: &[&str], rng: &mut fastrand::Rng| {
                        if rng.bool() {
                            fields
                                .push(format!("\"{key}\": {}", values[rng.usize(..values.len())]));
                        }
                    };
                    maybe(
                        "mode",
                        &["\"train\"", "\"val\"", "\"test\"", "null", "\"x\"", "1"],
                        &mut rng,
                    );
                    maybe("resources_id", &["\"rs-1\"", "null", "7"], &mut rng);
                    maybe(
                        "config",
                        &[
                            "null",
                            "{}",
                            "{\"max_attempts\": 3, \"retry_condition\": [\"failed\"]}",
                            "{\"max_attempts\": 0}",
                            "{\"timeout_seconds\": 5, \"unresponsive_seconds\": null}",
                            "[]",
                        ],
                        &mut rng,
                    );
                    maybe(
                        "metadata",
                        &[
                            "null",
                            "{}",
                            "{\"a\": [1, 2.0]}",
                            "[]",
                            "\"m\"",
                            "{\"a\":1,\"a\":2}",
                        ],
                        &mut rng,
                    );
                    maybe("worker_id", &["\"w\"", "null", "false"], &mut rng);
                    maybe("extra", &["{\"z\": 1}", "null"], &mut rng);
                    maybe("input", &["2"], &mut rng);
                    if rng.u8(0..10) == 0 {
                        fields.remove(0);
                    }
                    rng.shuffle(&mut fields);
                    format!("{{{}}}", fields.join(", "))
                })
                .collect();
            let body = match rng.u8(0..12) {
                0 => "{\"rollouts\": null}".to_owned(),
                1 => format!("{{\"rollouts\": [{}], \"rollouts\": []}}", items.join(",")),
                2 => format!("[{}]", items.join(",")),
                _ => format!("{{\"other\": 1, \"rollouts\": [{}]}}", items.join(",")),
            };
            let expected = checked(body.as_bytes());
            if let Ok(EnqueueCommon(rollouts)) = serde_json::from_slice(body.as_bytes()) {
                common += 1;
                assert_eq!(Some(format!("{rollouts:?}")), expected, "{body}");
            }
            valid += usize::from(expected.is_some());
            let through = enqueue_many_body(body.as_bytes())
                .ok()
                .map(|r| format!("{r:?}"));
            assert_eq!(through, expected, "{body}");
        }
        assert!(
            common > 300 && valid > common + 100,
            "common {common}, valid {valid}"
        );
    }
}
