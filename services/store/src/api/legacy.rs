//! The two older protocols, answered from the same store as projections of the current
//! models:
//!
//! * `/agl/v1/*`: the reference's API (single-item enqueue and dequeue, plain lists,
//!   resources without version fields);
//! * the flat routes of `agentlightning==0.2.2` (`/start_rollout`, `/add_span`, ...): 200
//!   on every success and 400 for every application error.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::params::{self, body, query};
use super::{ApiError, ApiResult, AppState, Body, null, ok, ok_raw};
use crate::core::{PageRequest, RolloutQuery, SpanQuery};
use crate::model::{NamedResources, ResourcesUpdate, Rollout, RolloutStatus, RolloutView};
use crate::span::parse_span_body;
use crate::stored_span;
use crate::validate::{self, Errors, object, optional, required_non_null};

/// Routes relative to `/agl/v1`.
pub fn current_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(super::v3::health))
        .route("/queues/rollouts/enqueue", post(a1_enqueue))
        .route("/queues/rollouts/dequeue", post(a1_dequeue))
        .route("/rollouts", post(a1_start_rollout).get(a1_list_rollouts))
        .route("/rollouts/search", post(a1_search_rollouts))
        .route(
            "/rollouts/{rollout_id}",
            get(a1_get_rollout).post(a1_update_rollout),
        )
        .route(
            "/rollouts/{rollout_id}/attempts",
            post(a1_start_attempt).get(a1_list_attempts),
        )
        .route(
            "/rollouts/{rollout_id}/attempts/latest",
            get(a1_latest_attempt).post(a1_update_latest_attempt),
        )
        .route(
            "/rollouts/{rollout_id}/attempts/{attempt_id}",
            post(a1_update_attempt),
        )
        .route("/resources", post(a1_add_resources))
        .route("/resources/latest", get(a1_latest_resources))
        .route(
            "/resources/{resources_id}",
            get(a1_get_resources).post(a1_update_resources),
        )
        .route("/spans", post(a1_add_span).get(a1_list_spans))
        .route("/spans/next", post(a1_next_sequence_id))
        .route("/waits/rollouts", post(a1_wait))
}

/// The flat 0.2.2 routes at the root.
pub fn flat_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(super::v3::health))
        .route("/start_rollout", post(v2_start_rollout))
        .route("/enqueue_rollout", post(v2_enqueue_rollout))
        .route("/dequeue_rollout", get(v2_dequeue_rollout))
        .route("/start_attempt", post(v2_start_attempt))
        .route("/query_rollouts", post(v2_query_rollouts))
        .route("/query_attempts/{rollout_id}", get(v2_query_attempts))
        .route("/get_latest_attempt/{rollout_id}", get(v2_latest_attempt))
        .route("/get_rollout_by_id/{rollout_id}", get(v2_get_rollout))
        .route("/add_resources", post(v2_add_resources))
        .route("/update_resources", post(v2_update_resources))
        .route("/get_resources_by_id/{resources_id}", get(v2_get_resources))
        .route("/get_latest_resources", get(v2_latest_resources))
        .route("/add_span", post(v2_add_span))
        .route(
            "/get_next_span_sequence_id/{rollout_id}/{attempt_id}",
            get(v2_next_sequence_id),
        )
        .route("/wait_for_rollouts", post(v2_wait))
        .route("/query_spans/{rollout_id}", get(v2_query_spans))
        .route("/update_rollout", post(v2_update_rollout))
        .route("/update_attempt", post(v2_update_attempt))
}

/// `ResourcesUpdate` as the older models define it: id and resources only.
#[derive(Serialize)]
struct LegacyResources<'a> {
    resources_id: &'a str,
    resources: &'a NamedResources,
}

fn legacy_resources(r: Option<ResourcesUpdate>) -> ApiResult {
    match r {
        Some(r) => ok(
            StatusCode::OK,
            &LegacyResources {
                resources_id: &r.resources_id,
                resources: &r.resources,
            },
        ),
        None => null(StatusCode::OK),
    }
}

fn rollouts(views: impl IntoIterator<Item = RolloutView>) -> Vec<Rollout> {
    views.into_iter().map(|v| v.rollout).collect()
}

async fn all_rollouts(
    s: &AppState,
    statuses: Option<Vec<RolloutStatus>>,
    ids: Option<Vec<String>>,
) -> Result<Vec<Rollout>, ApiError> {
    let q = RolloutQuery {
        status_in: statuses,
        rollout_id_in: ids,
        ..RolloutQuery::default()
    };
    Ok(rollouts(s.store.query_rollouts(&q).await?.items))
}

/// Stores a span and answers with it; a duplicate is answered with the span as posted
/// (the older protocols never answer `null` here).
async fn add_span_echo(s: &AppState, bytes: &[u8], status: StatusCode) -> ApiResult {
    let span = parse_span_body(bytes).map_err(ApiError::Validation)?;
    let echo = span.span.to_json();
    match s.store.add_span(span).await? {
        Some(stored) => ok_raw(status, stored.to_json()),
        None => ok_raw(status, echo),
    }
}

// ----- /agl/v1 ------------------------------------------------------------------------

async fn a1_enqueue(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout, _) = body(&b, params::new_rollout)?;
    let created = s.store.enqueue_rollouts(vec![rollout]).await?;
    ok(StatusCode::CREATED, &created[0])
}

async fn a1_dequeue(State(s): State<AppState>) -> ApiResult {
    match s.store.dequeue(1, None).await?.pop() {
        Some(v) => ok(StatusCode::OK, &v),
        None => null(StatusCode::OK),
    }
}

async fn a1_start_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout, _) = body(&b, params::new_rollout)?;
    ok(
        StatusCode::CREATED,
        &s.store.start_rollout(rollout, None).await?,
    )
}

async fn a1_list_rollouts(State(s): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, &all_rollouts(&s, None, None).await?)
}

/// The optional `status` and `rollout_ids` filters of the older rollout searches.
type StatusAndIds = (Option<Vec<RolloutStatus>>, Option<Vec<String>>);

fn status_and_ids(v: &Value, errs: &mut Errors) -> Option<StatusAndIds> {
    let map = object(v, errs)?;
    let statuses = optional(map, "status", errs, |v, e| {
        validate::list(v, e, validate::rollout_status)
    });
    let ids = optional(map, "rollout_ids", errs, |v, e| {
        validate::list(v, e, validate::string)
    });
    Some((statuses, ids))
}

async fn a1_search_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (statuses, ids) = params::optional_body(&b, status_and_ids)?;
    ok(StatusCode::OK, &all_rollouts(&s, statuses, ids).await?)
}

async fn a1_get_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.get_rollout(&id).await? {
        Some(v) => ok(StatusCode::OK, &v.rollout),
        None => null(StatusCode::OK),
    }
}

async fn a1_update_rollout(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let (patch, _) = params::rollout_patch(&b, false)?;
    ok(StatusCode::OK, &s.store.update_rollout(&id, patch).await?)
}

async fn a1_start_attempt(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(
        StatusCode::CREATED,
        &s.store.start_attempt(&id, None).await?,
    )
}

async fn a1_list_attempts(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let page = s.store.query_attempts(&id, &PageRequest::default()).await?;
    ok(StatusCode::OK, &page.items)
}

async fn a1_latest_attempt(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.latest_attempt(&id).await? {
        Some(a) => ok(StatusCode::OK, &a),
        None => null(StatusCode::OK),
    }
}

async fn a1_update_latest_attempt(
    state: State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> ApiResult {
    a1_update_attempt(state, Path((id, "latest".to_owned())), b).await
}

async fn a1_update_attempt(
    State(s): State<AppState>,
    Path((rollout_id, attempt_id)): Path<(String, String)>,
    Body(b): Body,
) -> ApiResult {
    let (patch, _) = params::attempt_patch(&b, false)?;
    ok(
        StatusCode::OK,
        &s.store
            .update_attempt(&rollout_id, &attempt_id, patch)
            .await?,
    )
}

async fn a1_add_resources(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    let r = s.store.add_resources(resources).await?;
    ok(
        StatusCode::CREATED,
        &LegacyResources {
            resources_id: &r.resources_id,
            resources: &r.resources,
        },
    )
}

async fn a1_latest_resources(State(s): State<AppState>) -> ApiResult {
    legacy_resources(s.store.latest_resources().await?)
}

async fn a1_get_resources(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    legacy_resources(s.store.get_resources(&id).await?)
}

async fn a1_update_resources(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    legacy_resources(Some(s.store.update_resources(&id, resources).await?))
}

async fn a1_add_span(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    add_span_echo(&s, &b, StatusCode::CREATED).await
}

async fn spans_list(s: &AppState, rollout_id: String, attempt_id: Option<String>) -> ApiResult {
    let q = SpanQuery {
        rollout_id,
        attempt_id,
        ..SpanQuery::default()
    };
    ok_raw(
        StatusCode::OK,
        stored_span::spans_json(&s.store.query_spans(&q).await?.items),
    )
}

async fn a1_list_spans(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let (rollout_id, attempt_id) = query(q.as_deref(), &[], |v, errs| {
        let map = object(v, errs)?;
        let r = required_non_null(
            map,
            "rollout_id",
            errs,
            validate::string,
            validate::STRING_NULL,
        );
        let a = optional(map, "attempt_id", errs, validate::string);
        Some((r?, a))
    })?;
    spans_list(&s, rollout_id, attempt_id).await
}

async fn a1_next_sequence_id(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout_id, _) = body(&b, params::sequence_request)?;
    ok(
        StatusCode::OK,
        &json!({"sequence_id": s.store.next_sequence_id(&rollout_id).await?}),
    )
}

async fn a1_wait(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (ids, timeout) = body(&b, params::wait_request)?;
    ok(
        StatusCode::OK,
        &s.store.wait_for_rollouts(&ids, timeout).await,
    )
}

// ----- flat 0.2.2 routes --------------------------------------------------------------

/// Runs a flat handler, answering its errors in the flat protocol's shape.
async fn flat(f: impl Future<Output = ApiResult>) -> Result<Response, ApiError> {
    f.await.map_err(ApiError::flat)
}

async fn v2_start_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (rollout, _) = body(&b, params::new_rollout)?;
        ok(StatusCode::OK, &s.store.start_rollout(rollout, None).await?)
    })
    .await
}

async fn v2_enqueue_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (rollout, _) = body(&b, params::new_rollout)?;
        ok(
            StatusCode::OK,
            &s.store.enqueue_rollouts(vec![rollout]).await?[0],
        )
    })
    .await
}

async fn v2_dequeue_rollout(State(s): State<AppState>) -> ApiResult {
    match s.store.dequeue(1, None).await?.pop() {
        Some(v) => ok(StatusCode::OK, &v),
        None => null(StatusCode::OK),
    }
}

async fn v2_start_attempt(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let id = body(&b, |v, errs| {
            let map = object(v, errs)?;
            required_non_null(
                map,
                "rollout_id",
                errs,
                validate::string,
                validate::STRING_NULL,
            )
        })?;
        ok(StatusCode::OK, &s.store.start_attempt(&id, None).await?)
    })
    .await
}

async fn v2_query_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (statuses, ids) = params::optional_body(&b, status_and_ids)?;
        ok(StatusCode::OK, &all_rollouts(&s, statuses, ids).await?)
    })
    .await
}

async fn v2_query_attempts(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    flat(async {
        let page = s.store.query_attempts(&id, &PageRequest::default()).await?;
        ok(StatusCode::OK, &page.items)
    })
    .await
}

async fn v2_latest_attempt(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    a1_latest_attempt(State(s), Path(id)).await
}

async fn v2_get_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    a1_get_rollout(State(s), Path(id)).await
}

fn wrapped_resources(v: &Value, errs: &mut Errors) -> Option<(Option<String>, NamedResources)> {
    let map = object(v, errs)?;
    let id = optional(map, "resources_id", errs, validate::string);
    let resources = errs.nested("resources".into(), |e| match map.get("resources") {
        Some(r) => params::named_resources(r, e),
        None => {
            e.push(&[], "missing", "Field required", v);
            None
        }
    });
    Some((id, resources?))
}

async fn v2_add_resources(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (_, resources) = body(&b, wrapped_resources)?;
        legacy_resources(Some(s.store.add_resources(resources).await?))
    })
    .await
}

async fn v2_update_resources(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (id, resources) = body(&b, wrapped_resources)?;
        let Some(id) = id else {
            return Err(ApiError::Validation(vec![validate::FieldError {
                kind: "missing",
                loc: vec!["body".into(), "resources_id".into()],
                msg: "Field required".into(),
                input: Value::Null,
            }]));
        };
        legacy_resources(Some(s.store.update_resources(&id, resources).await?))
    })
    .await
}

async fn v2_get_resources(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    legacy_resources(s.store.get_resources(&id).await?)
}

async fn v2_latest_resources(State(s): State<AppState>) -> ApiResult {
    legacy_resources(s.store.latest_resources().await?)
}

async fn v2_add_span(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async { add_span_echo(&s, &b, StatusCode::OK).await }).await
}

async fn v2_next_sequence_id(
    State(s): State<AppState>,
    Path((rollout_id, _attempt_id)): Path<(String, String)>,
) -> ApiResult {
    ok(
        StatusCode::OK,
        &s.store.next_sequence_id(&rollout_id).await?,
    )
}

async fn v2_wait(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (ids, timeout) = body(&b, params::wait_request)?;
        ok(
            StatusCode::OK,
            &s.store.wait_for_rollouts(&ids, timeout).await,
        )
    })
    .await
}

async fn v2_query_spans(
    State(s): State<AppState>,
    Path(rollout_id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    flat(async {
        let attempt_id = query(q.as_deref(), &[], |v, errs| {
            let map = object(v, errs)?;
            Some(optional(map, "attempt_id", errs, validate::string))
        })?;
        spans_list(&s, rollout_id, attempt_id).await
    })
    .await
}

fn id_field(map: &serde_json::Map<String, Value>, key: &'static str) -> Result<String, ApiError> {
    let mut errs = Errors::new("body");
    match required_non_null(map, key, &mut errs, validate::string, validate::STRING_NULL) {
        Some(id) => Ok(id),
        None => Err(ApiError::Validation(errs.list)),
    }
}

async fn v2_update_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (patch, map) = params::rollout_patch(&b, true)?;
        let id = id_field(&map, "rollout_id")?;
        ok(StatusCode::OK, &s.store.update_rollout(&id, patch).await?)
    })
    .await
}

async fn v2_update_attempt(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    flat(async {
        let (patch, map) = params::attempt_patch(&b, true)?;
        let rollout_id = id_field(&map, "rollout_id")?;
        let attempt_id = id_field(&map, "attempt_id")?;
        ok(
            StatusCode::OK,
            &s.store
                .update_attempt(&rollout_id, &attempt_id, patch)
                .await?,
        )
    })
    .await
}
