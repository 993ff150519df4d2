//! The current protocol, `/v1/agl/*`, as `agentlightning==0.3.0` speaks it.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use super::params::{self, body, optional_body, query};
use super::{ApiResult, AppState, Body, null, ok};
use crate::model::{RolloutView, fields};
use crate::span::parse_span;

/// Routes relative to `/v1/agl`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/queues/rollouts/enqueue", post(enqueue))
        .route("/queues/rollouts/dequeue", post(dequeue))
        .route("/rollouts", post(start_rollout).get(list_rollouts))
        .route("/rollouts/search", post(search_rollouts))
        .route(
            "/rollouts/{rollout_id}",
            get(get_rollout).post(update_rollout),
        )
        .route(
            "/rollouts/{rollout_id}/attempts",
            post(start_attempt).get(list_attempts),
        )
        .route(
            "/rollouts/{rollout_id}/attempts/search",
            post(search_attempts),
        )
        .route(
            "/rollouts/{rollout_id}/attempts/latest",
            get(latest_attempt).post(update_latest_attempt),
        )
        .route(
            "/rollouts/{rollout_id}/attempts/{attempt_id}",
            post(update_attempt),
        )
        .route("/workers", get(list_workers))
        .route("/workers/search", post(search_workers))
        .route("/workers/{worker_id}", get(get_worker).post(update_worker))
        .route("/statistics", get(statistics))
        .route("/resources", get(list_resources).post(add_resources))
        .route(
            "/resources/latest",
            get(latest_resources).post(update_latest_named_resources),
        )
        .route(
            "/resources/{resources_id}",
            get(get_resources).post(update_resources),
        )
        .route("/spans", post(add_span).get(list_spans))
        .route("/spans/search", post(search_spans))
        .route("/spans/next", post(next_sequence_id))
        .route("/waits/rollouts", post(wait_for_rollouts))
}

pub(super) async fn health() -> ApiResult {
    ok(StatusCode::OK, &json!({"status": "ok"}))
}

async fn enqueue(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let rollouts = body(&b, params::enqueue_many)?;
    ok(StatusCode::CREATED, &s.store.enqueue_rollouts(rollouts))
}

async fn dequeue(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (limit, worker_id) = optional_body(&b, params::dequeue)?;
    if limit <= 0 {
        return ok(StatusCode::OK, &Vec::<RolloutView>::new());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    ok(StatusCode::OK, &s.store.dequeue(limit, worker_id))
}

async fn start_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout, worker_id) = body(&b, params::new_rollout)?;
    ok(
        StatusCode::CREATED,
        &s.store.start_rollout(rollout, worker_id),
    )
}

async fn list_rollouts(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(
        q.as_deref(),
        &["status_in", "rollout_id_in"],
        params::rollout_query,
    )?;
    params::check_page(&q.page, fields::ROLLOUT)?;
    ok(StatusCode::OK, &s.store.query_rollouts(&q)?)
}

async fn search_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = body(&b, params::rollout_query)?;
    params::check_page(&q.page, fields::ROLLOUT)?;
    ok(StatusCode::OK, &s.store.query_rollouts(&q)?)
}

async fn get_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    // Upstream answers an unknown id with a 500 that its own client retries for ~8 s
    // before returning None; `null` gives the client the same None at once.
    match s.store.get_rollout(&id) {
        Some(view) => ok(StatusCode::OK, &view),
        None => null(StatusCode::OK),
    }
}

async fn update_rollout(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let (patch, _) = params::rollout_patch(&b, false)?;
    ok(StatusCode::OK, &s.store.update_rollout(&id, patch)?)
}

async fn start_attempt(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let worker_id = optional_body(&b, params::worker_id)?;
    ok(StatusCode::CREATED, &s.store.start_attempt(&id, worker_id)?)
}

async fn list_attempts(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let page = query(q.as_deref(), &[], params::attempt_query)?;
    params::check_page(&page, fields::ATTEMPT)?;
    ok(StatusCode::OK, &s.store.query_attempts(&id, &page)?)
}

async fn search_attempts(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let page = body(&b, params::attempt_query)?;
    params::check_page(&page, fields::ATTEMPT)?;
    ok(StatusCode::OK, &s.store.query_attempts(&id, &page)?)
}

async fn latest_attempt(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.latest_attempt(&id) {
        Some(a) => ok(StatusCode::OK, &a),
        None => null(StatusCode::OK),
    }
}

async fn update_latest_attempt(
    state: State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> ApiResult {
    update_attempt(state, Path((id, "latest".to_owned())), b).await
}

async fn update_attempt(
    State(s): State<AppState>,
    Path((rollout_id, attempt_id)): Path<(String, String)>,
    Body(b): Body,
) -> ApiResult {
    let (patch, _) = params::attempt_patch(&b, false)?;
    ok(
        StatusCode::OK,
        &s.store.update_attempt(&rollout_id, &attempt_id, patch)?,
    )
}

async fn list_workers(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &["status_in"], params::worker_query)?;
    params::check_page(&q.page, fields::WORKER)?;
    ok(StatusCode::OK, &s.store.query_workers(&q)?)
}

async fn search_workers(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = optional_body(&b, params::worker_query)?;
    params::check_page(&q.page, fields::WORKER)?;
    ok(StatusCode::OK, &s.store.query_workers(&q)?)
}

async fn get_worker(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.get_worker(&id) {
        Some(w) => ok(StatusCode::OK, &w),
        None => null(StatusCode::OK),
    }
}

async fn update_worker(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let stats = params::worker_update(&b)?;
    ok(StatusCode::OK, &s.store.update_worker(&id, stats))
}

async fn statistics(State(s): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, &s.store.statistics())
}

async fn list_resources(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &[], params::resources_query)?;
    params::check_page(&q.page, fields::RESOURCES)?;
    ok(StatusCode::OK, &s.store.query_resources(&q)?)
}

async fn add_resources(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    ok(StatusCode::CREATED, &s.store.add_resources(resources))
}

async fn latest_resources(State(s): State<AppState>) -> ApiResult {
    match s.store.latest_resources() {
        Some(r) => ok(StatusCode::OK, &r),
        None => null(StatusCode::OK),
    }
}

/// `POST /resources/latest` upserts the resources whose id is literally `latest`, as the
/// upstream router resolves it.
async fn update_latest_named_resources(state: State<AppState>, b: Body) -> ApiResult {
    update_resources(state, Path("latest".to_owned()), b).await
}

async fn get_resources(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.get_resources(&id) {
        Some(r) => ok(StatusCode::OK, &r),
        None => null(StatusCode::OK),
    }
}

async fn update_resources(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    ok(StatusCode::OK, &s.store.update_resources(&id, resources))
}

async fn add_span(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let span = body(&b, parse_span)?;
    match s.store.add_span(span)? {
        Some(stored) => ok(StatusCode::CREATED, &stored),
        None => null(StatusCode::CREATED),
    }
}

async fn list_spans(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &[], params::span_query)?;
    params::check_page(&q.page, fields::SPAN)?;
    ok(StatusCode::OK, &s.store.query_spans(&q)?)
}

async fn search_spans(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = body(&b, params::span_query)?;
    params::check_page(&q.page, fields::SPAN)?;
    ok(StatusCode::OK, &s.store.query_spans(&q)?)
}

async fn next_sequence_id(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout_id, _attempt_id) = body(&b, params::sequence_request)?;
    ok(
        StatusCode::OK,
        &json!({"sequence_id": s.store.next_sequence_id(&rollout_id)}),
    )
}

async fn wait_for_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (ids, timeout) = body(&b, params::wait_request)?;
    ok(
        StatusCode::OK,
        &s.store.wait_for_rollouts(&ids, timeout).await,
    )
}
