//! The current protocol, `/v1/agl/*`, as `agentlightning==0.3.0` speaks it.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use super::openapi;
use super::params::{self, body, optional_body, query};
use super::{ApiError, ApiResult, AppState, Body, null, ok, ok_raw};
use crate::model::{
    Attempt, Page, Resource, ResourcesUpdate, Rollout, RolloutStatus, RolloutView, Worker,
    WorkerStatus, fields,
};
use crate::span::parse_span_body;

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

#[utoipa::path(get, path = "/v1/agl/health", tag = "store", responses((status = 200, body = openapi::Health)))]
pub(super) async fn health() -> ApiResult {
    ok(StatusCode::OK, &json!({"status": "ok"}))
}

#[utoipa::path(post, path = "/v1/agl/queues/rollouts/enqueue", tag = "rollouts", request_body = openapi::EnqueueManyRolloutsRequest, responses((status = 201, description = "the new rollouts, in request order", body = Vec<Rollout>), (status = 422, description = "invalid body")))]
pub(super) async fn enqueue(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let rollouts = params::enqueue_many_body(&b)?;
    ok(
        StatusCode::CREATED,
        &s.store.enqueue_rollouts(rollouts).await?,
    )
}

#[utoipa::path(post, path = "/v1/agl/queues/rollouts/dequeue", tag = "rollouts", request_body(content = Option<openapi::DequeueManyRolloutsRequest>, description = "optional"), responses((status = 200, description = "claimed rollouts with their new attempts", body = Vec<RolloutView>)))]
pub(super) async fn dequeue(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (limit, worker_id) = optional_body(&b, params::dequeue)?;
    if limit <= 0 {
        return ok(StatusCode::OK, &Vec::<RolloutView>::new());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    ok(StatusCode::OK, &s.store.dequeue(limit, worker_id).await?)
}

#[utoipa::path(post, path = "/v1/agl/rollouts", tag = "rollouts", request_body = openapi::RolloutRequest, responses((status = 201, body = RolloutView)))]
pub(super) async fn start_rollout(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout, worker_id) = body(&b, params::new_rollout)?;
    ok(
        StatusCode::CREATED,
        &s.store.start_rollout(rollout, worker_id).await?,
    )
}

#[utoipa::path(get, path = "/v1/agl/rollouts", tag = "rollouts", params(("status_in" = Option<Vec<RolloutStatus>>, Query, description = "repeat the key for several"), ("rollout_id_in" = Option<Vec<String>>, Query), ("rollout_id_contains" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query), ("sort_by" = Option<String>, Query), ("sort_order" = Option<String>, Query), ("filter_logic" = Option<String>, Query)), responses((status = 200, body = Page<RolloutView>), (status = 400, description = "bad pagination or sort field")))]
pub(super) async fn list_rollouts(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(
        q.as_deref(),
        &["status_in", "rollout_id_in"],
        params::rollout_query,
    )?;
    params::check_page(&q.page, fields::ROLLOUT)?;
    ok(StatusCode::OK, &s.store.query_rollouts(&q).await?)
}

#[utoipa::path(post, path = "/v1/agl/rollouts/search", tag = "rollouts", request_body = openapi::QueryRolloutsRequest, responses((status = 200, body = Page<RolloutView>), (status = 400, description = "bad pagination or sort field")))]
pub(super) async fn search_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = body(&b, params::rollout_query)?;
    params::check_page(&q.page, fields::ROLLOUT)?;
    ok(StatusCode::OK, &s.store.query_rollouts(&q).await?)
}

#[utoipa::path(get, path = "/v1/agl/rollouts/{rollout_id}", tag = "rollouts", params(("rollout_id" = String, Path)), responses((status = 200, description = "the rollout (with its latest attempt, if any), or null", body = Option<RolloutView>)))]
pub(super) async fn get_rollout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    // Upstream answers an unknown id with a 500 that its own client retries for ~8 s
    // before returning None; `null` gives the client the same None at once.
    match s.store.get_rollout(&id).await? {
        Some(view) => ok(StatusCode::OK, &view),
        None => null(StatusCode::OK),
    }
}

#[utoipa::path(post, path = "/v1/agl/rollouts/{rollout_id}", tag = "rollouts", params(("rollout_id" = String, Path)), request_body = openapi::UpdateRolloutRequest, responses((status = 200, body = Rollout), (status = 400, description = "null status or config"), (status = 404, description = "unknown rollout")))]
pub(super) async fn update_rollout(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let (patch, _) = params::rollout_patch(&b, false)?;
    ok(StatusCode::OK, &s.store.update_rollout(&id, patch).await?)
}

#[utoipa::path(post, path = "/v1/agl/rollouts/{rollout_id}/attempts", tag = "attempts", params(("rollout_id" = String, Path)), request_body(content = Option<openapi::StartAttemptRequest>, description = "optional"), responses((status = 201, body = RolloutView), (status = 404, description = "unknown rollout")))]
pub(super) async fn start_attempt(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let worker_id = optional_body(&b, params::worker_id)?;
    ok(
        StatusCode::CREATED,
        &s.store.start_attempt(&id, worker_id).await?,
    )
}

#[utoipa::path(get, path = "/v1/agl/rollouts/{rollout_id}/attempts", tag = "attempts", params(("rollout_id" = String, Path), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query), ("sort_by" = Option<String>, Query), ("sort_order" = Option<String>, Query)), responses((status = 200, body = Page<Attempt>)))]
pub(super) async fn list_attempts(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let page = query(q.as_deref(), &[], params::attempt_query)?;
    params::check_page(&page, fields::ATTEMPT)?;
    ok(StatusCode::OK, &s.store.query_attempts(&id, &page).await?)
}

#[utoipa::path(post, path = "/v1/agl/rollouts/{rollout_id}/attempts/search", tag = "attempts", params(("rollout_id" = String, Path)), request_body = openapi::QueryAttemptsRequest, responses((status = 200, body = Page<Attempt>)))]
pub(super) async fn search_attempts(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let page = body(&b, params::attempt_query)?;
    params::check_page(&page, fields::ATTEMPT)?;
    ok(StatusCode::OK, &s.store.query_attempts(&id, &page).await?)
}

#[utoipa::path(get, path = "/v1/agl/rollouts/{rollout_id}/attempts/latest", tag = "attempts", params(("rollout_id" = String, Path)), responses((status = 200, description = "the newest attempt, or null", body = Option<Attempt>)))]
pub(super) async fn latest_attempt(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.latest_attempt(&id).await? {
        Some(a) => ok(StatusCode::OK, &a),
        None => null(StatusCode::OK),
    }
}

pub(super) async fn update_latest_attempt(
    state: State<AppState>,
    Path(id): Path<String>,
    b: Body,
) -> ApiResult {
    update_attempt(state, Path((id, "latest".to_owned())), b).await
}

#[utoipa::path(post, path = "/v1/agl/rollouts/{rollout_id}/attempts/{attempt_id}", tag = "attempts", params(("rollout_id" = String, Path), ("attempt_id" = String, Path, description = "an attempt id, or `latest`")), request_body = openapi::UpdateAttemptRequest, responses((status = 200, body = Attempt), (status = 400, description = "a null field"), (status = 404, description = "unknown rollout or attempt")))]
pub(super) async fn update_attempt(
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

#[utoipa::path(get, path = "/v1/agl/workers", tag = "workers", params(("status_in" = Option<Vec<WorkerStatus>>, Query), ("worker_id_contains" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query), ("sort_by" = Option<String>, Query), ("sort_order" = Option<String>, Query), ("filter_logic" = Option<String>, Query)), responses((status = 200, body = Page<Worker>)))]
pub(super) async fn list_workers(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &["status_in"], params::worker_query)?;
    params::check_page(&q.page, fields::WORKER)?;
    ok(StatusCode::OK, &s.store.query_workers(&q).await?)
}

#[utoipa::path(post, path = "/v1/agl/workers/search", tag = "workers", request_body = openapi::QueryWorkersRequest, responses((status = 200, body = Page<Worker>)))]
pub(super) async fn search_workers(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = optional_body(&b, params::worker_query)?;
    params::check_page(&q.page, fields::WORKER)?;
    ok(StatusCode::OK, &s.store.query_workers(&q).await?)
}

#[utoipa::path(get, path = "/v1/agl/workers/{worker_id}", tag = "workers", params(("worker_id" = String, Path)), responses((status = 200, description = "the worker, or null", body = Option<Worker>)))]
pub(super) async fn get_worker(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.get_worker(&id).await? {
        Some(w) => ok(StatusCode::OK, &w),
        None => null(StatusCode::OK),
    }
}

#[utoipa::path(post, path = "/v1/agl/workers/{worker_id}", tag = "workers", params(("worker_id" = String, Path)), request_body(content = Option<openapi::UpdateWorkerRequest>, description = "optional"), responses((status = 200, body = Worker)))]
pub(super) async fn update_worker(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let stats = params::worker_update(&b)?;
    ok(StatusCode::OK, &s.store.update_worker(&id, stats).await?)
}

#[utoipa::path(get, path = "/v1/agl/statistics", tag = "store", responses((status = 200, body = Object)))]
pub(super) async fn statistics(State(s): State<AppState>) -> ApiResult {
    ok(StatusCode::OK, &s.store.statistics().await?)
}

#[utoipa::path(get, path = "/v1/agl/resources", tag = "resources", params(("resources_id" = Option<String>, Query), ("resources_id_contains" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query), ("sort_by" = Option<String>, Query), ("sort_order" = Option<String>, Query)), responses((status = 200, body = Page<ResourcesUpdate>)))]
pub(super) async fn list_resources(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &[], params::resources_query)?;
    params::check_page(&q.page, fields::RESOURCES)?;
    ok(StatusCode::OK, &s.store.query_resources(&q).await?)
}

#[utoipa::path(post, path = "/v1/agl/resources", tag = "resources", request_body = std::collections::HashMap<String, Resource>, responses((status = 201, body = ResourcesUpdate)))]
pub(super) async fn add_resources(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    ok(
        StatusCode::CREATED,
        &s.store.add_resources(resources).await?,
    )
}

#[utoipa::path(get, path = "/v1/agl/resources/latest", tag = "resources", responses((status = 200, description = "the latest resources, or null", body = Option<ResourcesUpdate>)))]
pub(super) async fn latest_resources(State(s): State<AppState>) -> ApiResult {
    match s.store.latest_resources().await? {
        Some(r) => ok(StatusCode::OK, &r),
        None => null(StatusCode::OK),
    }
}

/// `POST /resources/latest` upserts the resources whose id is literally `latest`, as the
/// upstream router resolves it.
pub(super) async fn update_latest_named_resources(state: State<AppState>, b: Body) -> ApiResult {
    update_resources(state, Path("latest".to_owned()), b).await
}

#[utoipa::path(get, path = "/v1/agl/resources/{resources_id}", tag = "resources", params(("resources_id" = String, Path)), responses((status = 200, description = "the resources, or null", body = Option<ResourcesUpdate>)))]
pub(super) async fn get_resources(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match s.store.get_resources(&id).await? {
        Some(r) => ok(StatusCode::OK, &r),
        None => null(StatusCode::OK),
    }
}

#[utoipa::path(post, path = "/v1/agl/resources/{resources_id}", tag = "resources", params(("resources_id" = String, Path)), request_body = std::collections::HashMap<String, Resource>, responses((status = 200, description = "created (version 1) or replaced (version + 1)", body = ResourcesUpdate)))]
pub(super) async fn update_resources(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Body(b): Body,
) -> ApiResult {
    let resources = body(&b, params::named_resources)?;
    ok(
        StatusCode::OK,
        &s.store.update_resources(&id, resources).await?,
    )
}

#[utoipa::path(post, path = "/v1/agl/spans", tag = "spans", request_body = openapi::Span, responses((status = 201, description = "the stored span, or null for a duplicate", body = Option<openapi::Span>), (status = 404, description = "unknown rollout or attempt")))]
pub(super) async fn add_span(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let span = parse_span_body(&b).map_err(ApiError::Validation)?;
    match s.store.add_span(span).await? {
        Some(stored) => ok_raw(StatusCode::CREATED, stored.to_json()),
        None => null(StatusCode::CREATED),
    }
}

#[utoipa::path(get, path = "/v1/agl/spans", tag = "spans", params(("rollout_id" = String, Query), ("attempt_id" = Option<String>, Query, description = "an attempt id, or `latest`"), ("trace_id" = Option<String>, Query), ("trace_id_contains" = Option<String>, Query), ("span_id" = Option<String>, Query), ("span_id_contains" = Option<String>, Query), ("parent_id" = Option<String>, Query), ("parent_id_contains" = Option<String>, Query), ("name" = Option<String>, Query), ("name_contains" = Option<String>, Query), ("filter_logic" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query), ("sort_by" = Option<String>, Query), ("sort_order" = Option<String>, Query)), responses((status = 200, body = Page<openapi::Span>)))]
pub(super) async fn list_spans(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query(q.as_deref(), &[], params::span_query)?;
    params::check_page(&q.page, fields::SPAN)?;
    ok_raw(StatusCode::OK, s.store.query_spans(&q).await?.to_json())
}

#[utoipa::path(post, path = "/v1/agl/spans/search", tag = "spans", request_body = openapi::QuerySpansRequest, responses((status = 200, body = Page<openapi::Span>)))]
pub(super) async fn search_spans(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let q = body(&b, params::span_query)?;
    params::check_page(&q.page, fields::SPAN)?;
    ok_raw(StatusCode::OK, s.store.query_spans(&q).await?.to_json())
}

#[utoipa::path(post, path = "/v1/agl/spans/next", tag = "spans", request_body = openapi::SequenceIdRequest, responses((status = 200, body = openapi::SequenceIdResponse)))]
pub(super) async fn next_sequence_id(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (rollout_id, _attempt_id) = body(&b, params::sequence_request)?;
    ok(
        StatusCode::OK,
        &json!({"sequence_id": s.store.next_sequence_id(&rollout_id).await?}),
    )
}

#[utoipa::path(post, path = "/v1/agl/waits/rollouts", tag = "rollouts", request_body = openapi::WaitForRolloutsRequest, responses((status = 200, description = "the finished rollouts among those asked, in the order asked", body = Vec<Rollout>)))]
pub(super) async fn wait_for_rollouts(State(s): State<AppState>, Body(b): Body) -> ApiResult {
    let (ids, timeout) = body(&b, params::wait_request)?;
    ok(
        StatusCode::OK,
        &s.store.wait_for_rollouts(&ids, timeout).await,
    )
}
