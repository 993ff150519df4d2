//! The upstream v1 protocol's shapes (`agl-server` of `agentlightning` 1.0): reading its
//! request bodies (with pydantic's 422 reports) and writing its answers, key for key as
//! its models dump them. The operations themselves are the engine's (`core::v1`); the
//! routes are `api::v1`.
//!
//! How a v1 rollout appears to the other protocols: as a rollout like any other, its mode
//! `train` or `val` from `is_train`, its status the v1 state (`queuing`, `running`,
//! `succeeded`, `failed`), and its v1-only fields under a `v1` key. The other way round,
//! v1 sees every rollout: `preparing` reads as `running`, `requeuing` as `queuing` and
//! `cancelled` as `failed` ([`V1State::of`]). v1 events are spans of the rollout
//! ([`events`]).
//!
//! * [`events`]: events as spans, and the triplet projection of `format=triplet`;
//! * [`proxy`]: the capturing proxy under `/proxy/…`, on the engine agl-vllm uses.

pub mod events;
pub mod proxy;

use serde_json::{Map, Value};

use crate::core::{NewRollout, V1Patch};
use crate::model::{Json, Rollout, RolloutMode, V1Fields, V1Model, V1State};
use crate::validate::{self, Errors, FieldError, Loc};

/// Longest rollout id a caller may choose (bytes). Ids travel in URL paths and, through
/// upstream's controller, in Kubernetes Job names.
pub const MAX_ROLLOUT_ID: usize = 512;

/// Upstream's default rollout timeout (its controller kills an agent after it).
const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;

fn raw(value: &impl serde::Serialize) -> Json {
    serde_json::value::to_raw_value(value)
        .expect("a JSON value serializes")
        .into()
}

/// The body of `POST /api/rollouts`: a list of `RolloutCreate`.
pub fn parse_creates(bytes: &[u8]) -> Result<Vec<NewRollout>, Vec<FieldError>> {
    let body = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    let news = validate::list(&body, &mut errs, create);
    errs.finish(news.unwrap_or_default())
}

fn create(v: &Value, errs: &mut Errors) -> Option<NewRollout> {
    let map = validate::object(v, errs)?;
    let input = validate::required(map, "input", errs, |v, _| Some(v.clone()));
    let is_train = validate::field(map, "is_train", errs, validate::boolean);
    let is_train = match is_train {
        validate::Field::Absent => Some(true),
        validate::Field::Value(b) => Some(b),
        validate::Field::Null => {
            errs.push(
                &[Loc::from("is_train")],
                "bool_type",
                "Input should be a valid boolean",
                &Value::Null,
            );
            None
        }
        validate::Field::Invalid => None,
    };
    let config = validate::field(map, "config", errs, config);
    let metadata = validate::field(map, "metadata", errs, metadata);
    let rollout_id = validate::field(map, "rollout_id", errs, rollout_id);
    let (Some(input), Some(is_train)) = (input, is_train) else {
        return None;
    };
    let config = match config {
        validate::Field::Invalid => return None,
        validate::Field::Value(c) => c,
        validate::Field::Absent | validate::Field::Null => default_config(),
    };
    let metadata = match metadata {
        validate::Field::Invalid => return None,
        validate::Field::Value(m) => m,
        validate::Field::Absent | validate::Field::Null => Map::new(),
    };
    let rollout_id = match rollout_id {
        validate::Field::Invalid => return None,
        // Upstream draws a new id for an empty one too.
        validate::Field::Value(id) => Some(id).filter(|id: &String| !id.is_empty()),
        validate::Field::Absent | validate::Field::Null => None,
    };
    Some(NewRollout {
        input: raw(&input.unwrap_or(Value::Null)),
        mode: Some(if is_train {
            RolloutMode::Train
        } else {
            RolloutMode::Val
        }),
        resources_id: None,
        config: None,
        metadata: Some(raw(&Value::Object(metadata))),
        rollout_id,
        v1: Some(Box::new(V1Fields {
            config: raw(&config),
            k8s_job_name: None,
            last_attempt_id: None,
            error_message: None,
            version: 1,
            updated_at: 0.0,
            terminal_seq: None,
            attempts: Vec::new(),
        })),
    })
}

fn rollout_id(v: &Value, errs: &mut Errors) -> Option<String> {
    let id = validate::string(v, errs)?;
    if id.contains('/') || id.len() > MAX_ROLLOUT_ID {
        errs.push(
            &[],
            "value_error",
            format!(
                "Value error, a rollout id has at most {MAX_ROLLOUT_ID} bytes and no '/' \
                 (it is a URL path segment)"
            ),
            v,
        );
        return None;
    }
    Some(id)
}

fn default_config() -> Value {
    serde_json::json!({"timeout_seconds": DEFAULT_TIMEOUT_SECONDS, "local": null, "k8s": null})
}

/// `RolloutConfig`, with upstream's defaults filled in and unknown keys dropped.
fn config(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = validate::object(v, errs)?;
    let timeout = validate::optional(map, "timeout_seconds", errs, validate::integer);
    let timeout_null = matches!(map.get("timeout_seconds"), Some(Value::Null));
    if timeout_null {
        errs.push(
            &[Loc::from("timeout_seconds")],
            validate::INT_NULL.0,
            validate::INT_NULL.1,
            &Value::Null,
        );
    }
    let local = validate::field(map, "local", errs, |v, e| {
        let m = validate::object(v, e)?;
        let agent_class = validate::optional(m, "agent_class", e, validate::string);
        let env_map = match validate::field(m, "env_map", e, |v, e| {
            let m = validate::dict_ref(v, e)?;
            let mut out = Map::new();
            let mut ok = true;
            for (k, item) in m {
                match e.nested(Loc::key(k), |e| validate::string(item, e)) {
                    Some(s) => {
                        out.insert(k.clone(), Value::String(s));
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }) {
            validate::Field::Value(m) => Some(m),
            validate::Field::Absent => Some(Map::new()),
            validate::Field::Null => {
                e.push(
                    &[Loc::from("env_map")],
                    validate::DICT_NULL.0,
                    validate::DICT_NULL.1,
                    &Value::Null,
                );
                None
            }
            validate::Field::Invalid => None,
        }?;
        Some(serde_json::json!({"agent_class": agent_class, "env_map": env_map}))
    });
    let k8s = validate::field(map, "k8s", errs, |v, e| {
        let m = validate::object(v, e)?;
        let job_template = validate::optional(m, "job_template", e, validate::string);
        Some(serde_json::json!({ "job_template": job_template }))
    });
    if timeout_null {
        return None;
    }
    let optional_object = |f: validate::Field<Value>| match f {
        validate::Field::Value(v) => Some(v),
        validate::Field::Absent | validate::Field::Null => Some(Value::Null),
        validate::Field::Invalid => None,
    };
    let (local, k8s) = (optional_object(local)?, optional_object(k8s)?);
    if !errs.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "timeout_seconds": timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        "local": local,
        "k8s": k8s,
    }))
}

/// `RolloutMetadata`: `batch_idx` and `sample_idx_in_batch` integers or null, any other key
/// kept as it came.
fn metadata(v: &Value, errs: &mut Errors) -> Option<Map<String, Value>> {
    let map = validate::object(v, errs)?;
    let mut ok = true;
    for key in ["batch_idx", "sample_idx_in_batch"] {
        if let Some(value) = map.get(key).filter(|v| !v.is_null())
            && errs
                .nested(Loc::from(key), |e| validate::integer(value, e))
                .is_none()
        {
            ok = false;
        }
    }
    ok.then(|| map.clone())
}

/// The body of `POST /api/models`: a list of `Model` (`model`, `endpoint`, `version = 0`).
pub fn parse_models(bytes: &[u8]) -> Result<Vec<V1Model>, Vec<FieldError>> {
    let body = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    let models = validate::list(&body, &mut errs, |v, e| {
        let m = validate::object(v, e)?;
        let model =
            validate::required_non_null(m, "model", e, validate::string, validate::STRING_NULL);
        let endpoint =
            validate::required_non_null(m, "endpoint", e, validate::string, validate::STRING_NULL);
        let version = match validate::field(m, "version", e, validate::integer) {
            validate::Field::Absent => Some(0),
            validate::Field::Value(n) => Some(n),
            validate::Field::Null => {
                e.push(
                    &[Loc::from("version")],
                    validate::INT_NULL.0,
                    validate::INT_NULL.1,
                    &Value::Null,
                );
                None
            }
            validate::Field::Invalid => None,
        };
        Some(V1Model {
            model: model?,
            endpoint: endpoint?,
            version: version?,
        })
    });
    errs.finish(models.unwrap_or_default())
}

/// The body of `POST /proxy/pause`: `{retry_after_seconds: int = 5, reason: str | None}`
/// (empty: the defaults).
pub fn parse_pause(bytes: &[u8]) -> Result<(u64, Option<String>), Vec<FieldError>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((agl_llm_proxy::pause::DEFAULT_RETRY_AFTER_SECONDS, None));
    }
    let body = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    let parsed = validate::object(&body, &mut errs).map(|m| {
        let retry = validate::optional(m, "retry_after_seconds", &mut errs, |v, e| {
            let n = validate::integer(v, e)?;
            u64::try_from(n).ok().or_else(|| {
                e.push(
                    &[],
                    "greater_than_equal",
                    "Input should be greater than or equal to 0",
                    v,
                );
                None
            })
        });
        let reason = validate::optional(m, "reason", &mut errs, validate::string);
        (
            retry.unwrap_or(agl_llm_proxy::pause::DEFAULT_RETRY_AFTER_SECONDS),
            reason,
        )
    });
    errs.finish(parsed.unwrap_or_default())
}

/// The body of `PATCH /api/rollouts/{id}`: `{"status": {...} | null}`, the status's
/// unknown keys refused as upstream's `extra="forbid"` does.
pub fn parse_patch(bytes: &[u8]) -> Result<V1Patch, Vec<FieldError>> {
    let body = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    let patch = validate::object(&body, &mut errs).and_then(|map| {
        validate::optional(map, "status", &mut errs, |v, e| {
            let m = validate::object(v, e)?;
            for key in m.keys() {
                if !["state", "k8s_job_name", "last_attempt_id", "error_message"]
                    .contains(&key.as_str())
                {
                    e.push(
                        &[Loc::key(key)],
                        "extra_forbidden",
                        "Extra inputs are not permitted",
                        &m[key],
                    );
                }
            }
            let state = validate::optional(m, "state", e, |v, e| {
                validate::one_of(v, e, V1State::ALL, V1State::as_str)
            });
            let text = |key: &'static str, e: &mut Errors| match validate::field(
                m,
                key,
                e,
                validate::string,
            ) {
                validate::Field::Absent => Some(None),
                validate::Field::Null => Some(Some(None)),
                validate::Field::Value(s) => Some(Some(Some(s))),
                validate::Field::Invalid => None,
            };
            let k8s_job_name = text("k8s_job_name", e)?;
            let last_attempt_id = text("last_attempt_id", e)?;
            let error_message = text("error_message", e)?;
            Some(V1Patch {
                state,
                k8s_job_name,
                last_attempt_id,
                error_message,
            })
        })
        .or(Some(V1Patch::default()))
    });
    errs.finish(patch.unwrap_or_default())
}

/// The v1 fields of a rollout: its own, or upstream's defaults for one another protocol
/// created and v1 never changed.
fn fields(rollout: &Rollout) -> std::borrow::Cow<'_, V1Fields> {
    match &rollout.v1 {
        Some(v1) => std::borrow::Cow::Borrowed(v1),
        None => std::borrow::Cow::Owned(V1Fields::defaults_for(rollout)),
    }
}

/// A rollout as v1's `Rollout` model dumps it.
pub fn rollout_json(rollout: &Rollout) -> Value {
    let v1 = fields(rollout);
    let mut metadata = Map::new();
    let given = rollout
        .metadata
        .as_ref()
        .and_then(|m| serde_json::from_str::<Map<String, Value>>(m.get()).ok())
        .unwrap_or_default();
    for key in ["batch_idx", "sample_idx_in_batch"] {
        let value = given
            .get(key)
            .and_then(Value::as_f64)
            .map_or(Value::Null, |f| {
                // Read as pydantic does: an integral float is that integer.
                #[allow(clippy::cast_possible_truncation)]
                Value::from(f as i64)
            });
        metadata.insert(key.to_owned(), value);
    }
    for (key, value) in given {
        if key != "batch_idx" && key != "sample_idx_in_batch" {
            metadata.insert(key, value);
        }
    }
    let config: Value = serde_json::from_str(v1.config.get()).unwrap_or_else(|_| default_config());
    serde_json::json!({
        "rollout_id": rollout.rollout_id,
        "input": &*rollout.input,
        "is_train": !matches!(rollout.mode, Some(RolloutMode::Val | RolloutMode::Test)),
        "config": config,
        "metadata": metadata,
        "status": {
            "state": V1State::of(rollout.status).as_str(),
            "k8s_job_name": v1.k8s_job_name,
            "last_attempt_id": v1.last_attempt_id,
            "error_message": v1.error_message,
            "version": v1.version,
            "created_at": rollout.start_time,
            "updated_at": v1.updated_at,
        },
    })
}

/// The attempts `GET /api/rollouts/{id}` lists: those its events were posted under, in
/// order of their first event; for a rollout of the other protocols, its attempts.
pub fn attempt_ids(rollout: &Rollout, attempts: &[crate::model::Attempt]) -> Vec<String> {
    match &rollout.v1 {
        Some(v1) if !v1.attempts.is_empty() || attempts.is_empty() => v1.attempts.clone(),
        _ => attempts.iter().map(|a| a.attempt_id.clone()).collect(),
    }
}

/// The attempt whose events `GET …/events` reads: the last one the controller named.
pub fn events_attempt(rollout: &Rollout) -> String {
    rollout
        .v1
        .as_ref()
        .and_then(|v1| v1.last_attempt_id.clone())
        .unwrap_or_else(|| "0".to_owned())
}

/// The `data_id` of the completion log: the input's `data_id`, else its `instance_id`, as
/// text; empty when neither is set (Python's `str(a or b or "")`).
pub fn data_id(input: &Value) -> String {
    let Some(map) = input.as_object() else {
        return String::new();
    };
    let truthy = |v: &&Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(true) => true,
    };
    match map
        .get("data_id")
        .filter(truthy)
        .or_else(|| map.get("instance_id").filter(truthy))
    {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".to_owned(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}
