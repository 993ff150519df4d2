//! Upstream v1's `agl-server` API (`agentlightning` 1.0): `/healthz` and the store routes
//! under `/api`, as its trainer and controller call them. Shapes and rules are in
//! `crate::v1`, the changes in `core::v1`; errors answer in v1's `{"detail": …}` form
//! ([`ApiError::v1`]).

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Body, ok};
use crate::core::{RolloutQuery, SpanQuery, StoreError};
use crate::model::V1State;
use crate::v1::{self, events};
use crate::validate::{self, Errors, Loc};

/// The routes, at the root (`/healthz`) and under `/api`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/proxy/rollout/{rollout_id}/attempt/{attempt_id}/mode/{mode}/openai/v1/{*path}",
            post(proxy_call),
        )
        .route("/proxy/pause", post(proxy_pause))
        .route("/proxy/resume", post(proxy_resume))
        .route("/proxy/state", get(proxy_state))
        .nest(
            "/api",
            Router::new()
                .route("/rollouts", post(create_rollouts).get(list_rollouts))
                .route("/rollouts/terminal", get(terminal_rollouts))
                .route(
                    "/rollouts/{rollout_id}",
                    get(get_rollout).patch(patch_rollout).delete(delete_rollout),
                )
                .route(
                    "/rollouts/{rollout_id}/attempt/{attempt_id}/events",
                    post(post_event),
                )
                .route("/rollouts/{rollout_id}/events", get(list_events))
                .route("/models", post(register_models).delete(clear_models)),
        )
}

#[utoipa::path(post, path = "/proxy/rollout/{rollout_id}/attempt/{attempt_id}/mode/{mode}/openai/v1/{path}", tag = "v1", params(("rollout_id" = String, Path), ("attempt_id" = String, Path), ("mode" = String, Path, description = "train or val"), ("path" = String, Path, description = "chat/completions or completions")), request_body(content = Object, description = "an OpenAI request; `stream: true` is served"), responses((status = 200, description = "the model server's answer (its status kept), recorded as a model_request event"), (status = 404, description = "unknown mode, path or rollout"), (status = 400, description = "not a JSON object"), (status = 429, description = "paused (Retry-After, X-Agl-Paused)"), (status = 502, description = "no model server answered"), (status = 503, description = "no server registered for the model"), (status = 504, description = "the model server timed out")))]
pub(super) async fn proxy_call(
    State(s): State<AppState>,
    Path(parts): Path<(String, String, String, String)>,
    Body(b): Body,
) -> axum::response::Response {
    crate::v1::proxy::forward(s.proxy, s.store, parts, b).await
}

/// `{retry_after_seconds = 5, reason}`.
#[utoipa::path(post, path = "/proxy/pause", tag = "v1", request_body(content = Option<Object>, description = "{retry_after_seconds = 5, reason}"), responses((status = 200, description = "{paused, retry_after_seconds, reason, inflight}")))]
pub(super) async fn proxy_pause(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (retry_after, reason) = v1::parse_pause(&b).map_err(validation)?;
    tracing::info!(
        retry_after,
        reason = reason.as_deref(),
        "proxy calls paused"
    );
    ok(StatusCode::OK, &s.proxy.gate().pause(retry_after, reason))
}

#[utoipa::path(post, path = "/proxy/resume", tag = "v1", responses((status = 200, description = "{paused, retry_after_seconds, reason, inflight}")))]
pub(super) async fn proxy_resume(State(s): State<AppState>) -> ApiResult {
    tracing::info!("proxy calls resumed");
    ok(StatusCode::OK, &s.proxy.gate().resume())
}

#[utoipa::path(get, path = "/proxy/state", tag = "v1", responses((status = 200, description = "{paused, retry_after_seconds, reason, inflight}")))]
pub(super) async fn proxy_state(State(s): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, &s.proxy.gate().state())
}

/// Upstream answers without authentication here, whatever its key.
#[utoipa::path(get, path = "/healthz", tag = "v1", responses((status = 200, description = "{\"status\": \"ok\"}")))]
pub(super) async fn healthz() -> ApiResult {
    ok(StatusCode::OK, &json!({"status": "ok"}))
}

/// A store error in v1's form.
fn v1<T>(r: Result<T, StoreError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::Store(e).v1())
}

fn validation(errors: Vec<validate::FieldError>) -> ApiError {
    ApiError::Validation(errors).v1()
}

#[utoipa::path(post, path = "/api/rollouts", tag = "v1", request_body(content = Vec<Object>, description = "RolloutCreate items: input, is_train, config, metadata, rollout_id"), responses((status = 201, description = "the rollouts, a known rollout_id answered unchanged"), (status = 422, description = "invalid body")))]
pub(super) async fn create_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let news = v1::parse_creates(&b).map_err(validation)?;
    let created = v1(s.store.v1_create(news).await)?;
    let out: Vec<Value> = created.iter().map(v1::rollout_json).collect();
    ok(StatusCode::CREATED, &out)
}

/// `state_in` (required, repeatable) and `limit` (default 500, cut as a Python slice).
fn list_query(raw: Option<&str>) -> Result<(Vec<V1State>, i64), ApiError> {
    let mut errs = Errors::new("query");
    let mut states = Vec::new();
    let mut limit = 500;
    let mut given = false;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "state_in" => {
                given = true;
                let value = Value::String(value.into_owned());
                let at = states.len();
                if let Some(state) = errs.nested(Loc::from("state_in"), |e| {
                    e.nested(Loc::Index(at), |e| {
                        validate::one_of(&value, e, V1State::ALL, V1State::as_str)
                    })
                }) {
                    states.push(state);
                }
            }
            "limit" => limit = int_param(&mut errs, "limit", &value).unwrap_or(limit),
            _ => {}
        }
    }
    if !given {
        errs.push(
            &[Loc::from("state_in")],
            "missing",
            "Field required",
            &Value::Null,
        );
    }
    errs.finish((states, limit)).map_err(validation)
}

#[utoipa::path(get, path = "/api/rollouts", tag = "v1", params(("state_in" = Vec<String>, Query, description = "repeat for several"), ("limit" = Option<i64>, Query)), responses((status = 200, description = "rollouts in creation order"), (status = 422, description = "no or unknown state")))]
pub(super) async fn list_rollouts(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let (states, limit) = list_query(q.as_deref())?;
    let query = RolloutQuery {
        status_in: Some(
            states
                .iter()
                .flat_map(|s| s.statuses().iter().copied())
                .collect(),
        ),
        page: crate::core::PageRequest {
            limit: limit.max(-1),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut items = v1(s.store.query_rollouts(&query).await)?.items;
    if limit < 0 {
        // `matches[:limit]`: all but the last |limit|.
        let keep = items
            .len()
            .saturating_sub(usize::try_from(limit.unsigned_abs()).unwrap_or(usize::MAX));
        items.truncate(keep);
    }
    let out: Vec<Value> = items.iter().map(|v| v1::rollout_json(&v.rollout)).collect();
    ok(StatusCode::OK, &out)
}

/// An integer query parameter, as FastAPI reads one.
fn int_param(errs: &mut Errors, key: &'static str, value: &str) -> Option<i64> {
    match value.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(
                &[Loc::from(key)],
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                &Value::String(value.to_owned()),
            );
            None
        }
    }
}

#[utoipa::path(get, path = "/api/rollouts/terminal", tag = "v1", params(("after" = Option<i64>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "{items, next_after, total_terminal}")))]
pub(super) async fn terminal_rollouts(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let mut errs = Errors::new("query");
    let (mut after, mut limit) = (0, 1000);
    for (key, value) in form_urlencoded::parse(q.as_deref().unwrap_or_default().as_bytes()) {
        match &*key {
            "after" => after = int_param(&mut errs, "after", &value).unwrap_or(after),
            "limit" => limit = int_param(&mut errs, "limit", &value).unwrap_or(limit),
            _ => {}
        }
    }
    errs.finish(()).map_err(validation)?;
    // Upstream's clamps.
    let (after, limit) = (after.max(0), limit.max(1));
    let (rollouts, total) = v1(s.store.v1_completions(after, limit).await)?;
    let items: Vec<Value> = rollouts
        .iter()
        .map(|r| {
            let v = v1::rollout_json(r);
            json!({
                "rollout_id": v["rollout_id"],
                "state": v["status"]["state"],
                "data_id": v1::data_id(&v["input"]),
                "is_train": v["is_train"],
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        &json!({
            "items": items,
            "next_after": after + (total - after).clamp(0, limit),
            "total_terminal": total,
        }),
    )
}

#[utoipa::path(get, path = "/api/rollouts/{rollout_id}", tag = "v1", params(("rollout_id" = String, Path)), responses((status = 200, description = "{rollout, attempts}"), (status = 404, description = "unknown rollout")))]
pub(super) async fn get_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let view = v1(s.store.get_rollout(&id).await)?
        .ok_or_else(|| ApiError::Store(StoreError::RolloutNotFound(id.clone())).v1())?;
    let attempts = if view.rollout.v1.is_some() {
        Vec::new()
    } else {
        v1(s.store.query_attempts(&id, &Default::default()).await)?.items
    };
    ok(
        StatusCode::OK,
        &json!({
            "rollout": v1::rollout_json(&view.rollout),
            "attempts": v1::attempt_ids(&view.rollout, &attempts),
        }),
    )
}

#[utoipa::path(patch, path = "/api/rollouts/{rollout_id}", tag = "v1", params(("rollout_id" = String, Path)), request_body(content = Object, description = "{status: {state, k8s_job_name, last_attempt_id, error_message}}"), responses((status = 200, description = "the rollout"), (status = 404, description = "unknown rollout"), (status = 409, description = "a transition v1 does not allow"), (status = 422, description = "invalid body")))]
pub(super) async fn patch_rollout(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let patch = v1::parse_patch(&b).map_err(validation)?;
    let rollout = v1(s.store.v1_patch(&id, patch).await)?;
    ok(StatusCode::OK, &v1::rollout_json(&rollout))
}

#[utoipa::path(post, path = "/api/models", tag = "v1", request_body(content = Vec<Object>, description = "{model, endpoint, version = 0} items"), responses((status = 201, description = "the models registered")))]
pub(super) async fn register_models(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let models = v1::parse_models(&b).map_err(validation)?;
    v1(s.store.v1_register_models(models.clone(), false).await)?;
    ok(StatusCode::CREATED, &models)
}

#[utoipa::path(delete, path = "/api/models", tag = "v1", responses((status = 200, description = "{\"status\": \"ok\"}")))]
pub(super) async fn clear_models(State(s): State<AppState>) -> ApiResult {
    v1(s.store.v1_register_models(Vec::new(), true).await)?;
    ok(StatusCode::OK, &json!({"status": "ok"}))
}

#[utoipa::path(delete, path = "/api/rollouts/{rollout_id}", tag = "v1", params(("rollout_id" = String, Path)), responses((status = 204, description = "deleted, or never there")))]
pub(super) async fn delete_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    v1(s.store.delete_rollout(&id).await)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/rollouts/{rollout_id}/attempt/{attempt_id}/events", tag = "v1", params(("rollout_id" = String, Path), ("attempt_id" = String, Path)), request_body(content = Object, description = "{event_type, data = {}}"), responses((status = 200, description = "the event"), (status = 404, description = "unknown rollout")))]
pub(super) async fn post_event(
    State(s): State<AppState>,
    Path((rollout_id, attempt_id)): Path<(String, String)>,
    Body(b): Body,
) -> ApiResult {
    let (event_type, data) = events::parse_event(&b).map_err(validation)?;
    let timestamp = s.store.now();
    let span = events::event_span(&rollout_id, &attempt_id, &event_type, &data, timestamp)
        .map_err(|e| ApiError::BadRequest(e.to_string()).v1())?;
    let stored = v1(s.store.v1_add_event(&rollout_id, span).await)?;
    let mut doc = Vec::with_capacity(stored.json_len());
    stored.write_json(&mut doc);
    let event = events::event_of(&doc).expect("an event span reads back as its event");
    ok(StatusCode::OK, &event)
}

/// `event_type`, `format` (`triplet`) and `include_routed_experts` (default true).
fn events_query(raw: Option<&str>) -> Result<(Option<String>, bool, bool), ApiError> {
    let mut errs = Errors::new("query");
    let (mut event_type, mut triplet, mut routes) = (None, false, true);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "event_type" => event_type = Some(value.into_owned()),
            "format" => triplet = value == "triplet",
            "include_routed_experts" => match parse_bool(&value) {
                Some(b) => routes = b,
                None => errs.push(
                    &[Loc::from("include_routed_experts")],
                    "bool_parsing",
                    "Input should be a valid boolean, unable to interpret input",
                    &Value::String(value.into_owned()),
                ),
            },
            _ => {}
        }
    }
    errs.finish((event_type, triplet, routes))
        .map_err(validation)
}

/// A boolean in a query string, as pydantic reads one.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

#[utoipa::path(get, path = "/api/rollouts/{rollout_id}/events", tag = "v1", params(("rollout_id" = String, Path), ("event_type" = Option<String>, Query), ("format" = Option<String>, Query, description = "triplet"), ("include_routed_experts" = Option<bool>, Query)), responses((status = 200, description = "the events of the attempt last named"), (status = 404, description = "unknown rollout")))]
pub(super) async fn list_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (event_type, triplet, routes) = events_query(q.as_deref())?;
    let view = v1(s.store.get_rollout(&id).await)?
        .ok_or_else(|| ApiError::Store(StoreError::RolloutNotFound(id.clone())).v1())?;
    let query = SpanQuery {
        rollout_id: id,
        attempt_id: Some(v1::events_attempt(&view.rollout)),
        ..Default::default()
    };
    let spans = v1(s.store.query_spans(&query).await)?.items;
    let mut doc = Vec::new();
    let mut found = Vec::with_capacity(spans.len());
    for span in &spans {
        doc.clear();
        span.write_json(&mut doc);
        if let Some(event) = events::event_of(&doc)
            && event_type.as_ref().is_none_or(|t| *t == event.event_type)
        {
            found.push(event);
        }
    }
    let mut found = if triplet {
        events::triplets(found)
    } else {
        events::raw(found)
    };
    if !routes {
        found = events::without_routes(found);
    }
    ok(StatusCode::OK, &found)
}
