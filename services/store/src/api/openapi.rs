//! The OpenAPI document of the current protocol and of upstream v1's routes, served at
//! `GET /openapi.json`.
//!
//! Response schemas come from the store's own model types; the request bodies, which the
//! handlers read field by field to tell absent from `null`, are described here.

#![allow(dead_code)]

use std::collections::HashMap;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::model::{
    Attempt, AttemptStatus, LlmResource, Page, PromptTemplateResource, Resource, ResourcesUpdate,
    Rollout, RolloutConfig, RolloutMode, RolloutStatus, RolloutView, TemplateEngine, Worker,
    WorkerStatus,
};

/// `POST /rollouts`: a rollout to start at once, with its first attempt.
#[derive(Serialize, ToSchema)]
pub struct RolloutRequest {
    /// The task input; any JSON value.
    #[schema(value_type = serde_json::Value)]
    input: serde_json::Value,
    mode: Option<RolloutMode>,
    /// Defaults to the latest resources.
    resources_id: Option<String>,
    config: Option<RolloutConfig>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    worker_id: Option<String>,
}

/// One rollout to enqueue.
#[derive(Serialize, ToSchema)]
pub struct EnqueueRolloutRequest {
    #[schema(value_type = serde_json::Value)]
    input: serde_json::Value,
    mode: Option<RolloutMode>,
    resources_id: Option<String>,
    config: Option<RolloutConfig>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// `POST /queues/rollouts/enqueue`.
#[derive(Serialize, ToSchema)]
pub struct EnqueueManyRolloutsRequest {
    rollouts: Vec<EnqueueRolloutRequest>,
}

/// `POST /queues/rollouts/dequeue` (the body is optional).
#[derive(Serialize, ToSchema)]
pub struct DequeueManyRolloutsRequest {
    #[schema(default = 1)]
    limit: i64,
    worker_id: Option<String>,
}

/// `POST /rollouts/{rollout_id}/attempts` (the body is optional).
#[derive(Serialize, ToSchema)]
pub struct StartAttemptRequest {
    worker_id: Option<String>,
}

/// Rollout query (`POST /rollouts/search`, or query parameters of `GET /rollouts`).
#[derive(Serialize, ToSchema)]
pub struct QueryRolloutsRequest {
    status_in: Option<Vec<RolloutStatus>>,
    rollout_id_in: Option<Vec<String>>,
    rollout_id_contains: Option<String>,
    #[schema(default = -1)]
    limit: i64,
    #[schema(default = 0)]
    offset: i64,
    sort_by: Option<String>,
    #[schema(default = "asc", pattern = "^(asc|desc)$")]
    sort_order: String,
    #[schema(default = "and", pattern = "^(and|or)$")]
    filter_logic: String,
}

/// Attempt query.
#[derive(Serialize, ToSchema)]
pub struct QueryAttemptsRequest {
    #[schema(default = -1)]
    limit: i64,
    #[schema(default = 0)]
    offset: i64,
    #[schema(default = "sequence_id")]
    sort_by: Option<String>,
    #[schema(default = "asc")]
    sort_order: String,
}

/// Worker query.
#[derive(Serialize, ToSchema)]
pub struct QueryWorkersRequest {
    status_in: Option<Vec<WorkerStatus>>,
    worker_id_contains: Option<String>,
    #[schema(default = -1)]
    limit: i64,
    #[schema(default = 0)]
    offset: i64,
    sort_by: Option<String>,
    #[schema(default = "asc")]
    sort_order: String,
    #[schema(default = "and")]
    filter_logic: String,
}

/// Resources query.
#[derive(Serialize, ToSchema)]
pub struct QueryResourcesRequest {
    resources_id: Option<String>,
    resources_id_contains: Option<String>,
    #[schema(default = -1)]
    limit: i64,
    #[schema(default = 0)]
    offset: i64,
    sort_by: Option<String>,
    #[schema(default = "asc")]
    sort_order: String,
}

/// Span query; `attempt_id` may be `latest`.
#[derive(Serialize, ToSchema)]
pub struct QuerySpansRequest {
    rollout_id: String,
    attempt_id: Option<String>,
    trace_id: Option<String>,
    trace_id_contains: Option<String>,
    span_id: Option<String>,
    span_id_contains: Option<String>,
    parent_id: Option<String>,
    parent_id_contains: Option<String>,
    name: Option<String>,
    name_contains: Option<String>,
    #[schema(default = "and")]
    filter_logic: String,
    #[schema(default = -1)]
    limit: i64,
    #[schema(default = 0)]
    offset: i64,
    #[schema(default = "sequence_id")]
    sort_by: Option<String>,
    #[schema(default = "asc")]
    sort_order: String,
}

/// `POST /waits/rollouts`.
#[derive(Serialize, ToSchema)]
pub struct WaitForRolloutsRequest {
    rollout_ids: Vec<String>,
    /// Seconds; `null` waits until the rollouts finish.
    timeout: Option<f64>,
}

/// `POST /rollouts/{rollout_id}`: absent fields stay; `null` clears `input`, `mode`,
/// `resources_id`, `metadata` and is a 400 for `status` and `config`.
#[derive(Serialize, ToSchema)]
pub struct UpdateRolloutRequest {
    #[schema(value_type = serde_json::Value)]
    input: Option<serde_json::Value>,
    mode: Option<RolloutMode>,
    resources_id: Option<String>,
    status: Option<RolloutStatus>,
    config: Option<RolloutConfig>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// `POST /rollouts/{rollout_id}/attempts/{attempt_id}`: absent fields stay; `null` is a 400.
#[derive(Serialize, ToSchema)]
pub struct UpdateAttemptRequest {
    status: Option<AttemptStatus>,
    worker_id: Option<String>,
    last_heartbeat_time: Option<f64>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// `POST /workers/{worker_id}` (the body is optional).
#[derive(Serialize, ToSchema)]
pub struct UpdateWorkerRequest {
    #[schema(value_type = Option<Object>)]
    heartbeat_stats: Option<serde_json::Value>,
}

/// `POST /spans/next`.
#[derive(Serialize, ToSchema)]
pub struct SequenceIdRequest {
    rollout_id: String,
    attempt_id: String,
}

/// The answer of `POST /spans/next`.
#[derive(Serialize, ToSchema)]
pub struct SequenceIdResponse {
    sequence_id: i64,
}

/// `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    status: String,
}

/// A span's status.
#[derive(Serialize, ToSchema)]
pub struct TraceStatus {
    #[schema(pattern = "^(UNSET|OK|ERROR)$")]
    status_code: String,
    description: Option<String>,
}

/// A span context.
#[derive(Serialize, ToSchema)]
pub struct SpanContext {
    trace_id: String,
    span_id: String,
    is_remote: bool,
    trace_state: HashMap<String, String>,
}

/// A span event.
#[derive(Serialize, ToSchema)]
pub struct Event {
    name: String,
    #[schema(value_type = Object)]
    attributes: serde_json::Value,
    timestamp: Option<f64>,
}

/// A span link.
#[derive(Serialize, ToSchema)]
pub struct Link {
    context: SpanContext,
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// The resource a span came from.
#[derive(Serialize, ToSchema)]
pub struct OtelResource {
    #[schema(value_type = Object)]
    attributes: serde_json::Value,
    schema_url: String,
}

/// A span. Every field is required (nullable where typed so); unknown keys are kept and
/// returned. Attribute values are scalars or homogeneous arrays of scalars.
#[derive(Serialize, ToSchema)]
pub struct Span {
    rollout_id: String,
    attempt_id: String,
    sequence_id: i64,
    trace_id: String,
    span_id: String,
    parent_id: Option<String>,
    name: String,
    status: TraceStatus,
    #[schema(value_type = Object)]
    attributes: serde_json::Value,
    events: Vec<Event>,
    links: Vec<Link>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    context: Option<SpanContext>,
    parent: Option<SpanContext>,
    resource: OtelResource,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "agl-store",
        description = "LightningStore API (Agent Lightning 0.3.0 protocol). The same server also \
                       answers the reference's /agl/v1 routes and the flat 0.2.2 routes; see the README."
    ),
    paths(
        super::v3::health,
        super::v3::enqueue,
        super::v3::dequeue,
        super::v3::start_rollout,
        super::v3::list_rollouts,
        super::v3::search_rollouts,
        super::v3::get_rollout,
        super::v3::update_rollout,
        super::v3::start_attempt,
        super::v3::list_attempts,
        super::v3::search_attempts,
        super::v3::latest_attempt,
        super::v3::update_attempt,
        super::v3::list_workers,
        super::v3::search_workers,
        super::v3::get_worker,
        super::v3::update_worker,
        super::v3::statistics,
        super::v3::list_resources,
        super::v3::add_resources,
        super::v3::latest_resources,
        super::v3::get_resources,
        super::v3::update_resources,
        super::v3::add_span,
        super::v3::list_spans,
        super::v3::search_spans,
        super::v3::next_sequence_id,
        super::v3::wait_for_rollouts,
        super::otlp::traces,
        super::v1::healthz,
        super::v1::create_rollouts,
        super::v1::list_rollouts,
        super::v1::terminal_rollouts,
        super::v1::get_rollout,
        super::v1::patch_rollout,
        super::v1::delete_rollout,
        super::v1::post_event,
        super::v1::list_events,
        super::v1::register_models,
        super::v1::clear_models,
        super::v1::proxy_call,
        super::v1::proxy_pause,
        super::v1::proxy_resume,
        super::v1::proxy_state,
    ),
    components(schemas(
        Rollout, RolloutView, Attempt, Worker, ResourcesUpdate, Resource, LlmResource,
        PromptTemplateResource, TemplateEngine, RolloutConfig, RolloutStatus, AttemptStatus,
        RolloutMode, WorkerStatus, Span, Page<Attempt>
    ))
)]
pub struct ApiDoc;

/// The serialized document.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}
