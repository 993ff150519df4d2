//! The store's data types, serialized exactly as the official Python models dump them
//! (every field present, `null` where unset, timestamps as float seconds).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An arbitrary JSON document kept as its original text: cheap to clone and to write back.
pub type Json = Arc<RawValue>;

pub use crate::stored_span::StoredSpan;

/// Seconds since the Unix epoch, as the Python models use.
pub type Timestamp = f64;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] #[schema(rename = $text)] $variant,)+
        }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Position in [`Self::ALL`], for per-status counters.
            pub fn index(self) -> usize {
                self as usize
            }
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
            /// The value of a wire name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where a rollout is in its life.
    RolloutStatus {
        Queuing => "queuing",
        Preparing => "preparing",
        Running => "running",
        Failed => "failed",
        Succeeded => "succeeded",
        Cancelled => "cancelled",
        Requeuing => "requeuing",
    }
);

impl RolloutStatus {
    /// Waiting in the queue for a runner.
    pub fn is_queuing(self) -> bool {
        matches!(self, Self::Queuing | Self::Requeuing)
    }
    /// Claimed by a runner (the watchdog watches these).
    pub fn is_running(self) -> bool {
        matches!(self, Self::Preparing | Self::Running)
    }
    /// Done for good (waiters are woken).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Failed | Self::Succeeded | Self::Cancelled)
    }
}

string_enum!(
    /// A rollout's state as the upstream v1 protocol names it: four states where the
    /// other protocols have seven (see [`V1State::of`]).
    V1State {
        Queuing => "queuing",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

impl V1State {
    /// The v1 state of a rollout in `status`: waiting is queuing, claimed is running,
    /// and a cancelled rollout has failed.
    pub fn of(status: RolloutStatus) -> Self {
        match status {
            RolloutStatus::Queuing | RolloutStatus::Requeuing => Self::Queuing,
            RolloutStatus::Preparing | RolloutStatus::Running => Self::Running,
            RolloutStatus::Succeeded => Self::Succeeded,
            RolloutStatus::Failed | RolloutStatus::Cancelled => Self::Failed,
        }
    }

    /// The statuses this state stands for (what a filter on it matches).
    pub fn statuses(self) -> &'static [RolloutStatus] {
        match self {
            Self::Queuing => &[RolloutStatus::Queuing, RolloutStatus::Requeuing],
            Self::Running => &[RolloutStatus::Preparing, RolloutStatus::Running],
            Self::Succeeded => &[RolloutStatus::Succeeded],
            Self::Failed => &[RolloutStatus::Failed, RolloutStatus::Cancelled],
        }
    }

    /// The status a v1 patch to this state sets.
    pub fn status(self) -> RolloutStatus {
        match self {
            Self::Queuing => RolloutStatus::Queuing,
            Self::Running => RolloutStatus::Running,
            Self::Succeeded => RolloutStatus::Succeeded,
            Self::Failed => RolloutStatus::Failed,
        }
    }

    /// The v1 state machine: queuing becomes running or failed, running becomes succeeded
    /// or failed, and the terminal states are final (no state becomes itself).
    pub fn can_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Queuing, Self::Running | Self::Failed)
                | (Self::Running, Self::Succeeded | Self::Failed)
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

string_enum!(
    /// Where one attempt of a rollout is.
    AttemptStatus {
        Preparing => "preparing",
        Running => "running",
        Failed => "failed",
        Succeeded => "succeeded",
        Unresponsive => "unresponsive",
        Timeout => "timeout",
    }
);

string_enum!(
    /// What a rollout is for.
    RolloutMode {
        Train => "train",
        Val => "val",
        Test => "test",
    }
);

string_enum!(
    /// What the store knows of a runner.
    WorkerStatus {
        Idle => "idle",
        Busy => "busy",
        Unknown => "unknown",
    }
);

/// Timeouts and retry policy of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutConfig {
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub unresponsive_seconds: Option<f64>,
    #[serde(default = "one")]
    pub max_attempts: i64,
    #[serde(default)]
    pub retry_condition: Vec<AttemptStatus>,
}

fn one() -> i64 {
    1
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: None,
            unresponsive_seconds: None,
            max_attempts: 1,
            retry_condition: Vec::new(),
        }
    }
}

/// A unit of work: one task input to run through the agent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    pub rollout_id: String,
    #[schema(value_type = serde_json::Value)]
    pub input: Json,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    pub mode: Option<RolloutMode>,
    pub resources_id: Option<String>,
    pub status: RolloutStatus,
    pub config: RolloutConfig,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json>,
    /// What the upstream v1 protocol (`/api`) keeps of a rollout it created, beyond the
    /// fields above; absent for rollouts of the other protocols (see `crate::v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub v1: Option<Box<V1Fields>>,
}

/// The v1 protocol's own fields of a rollout: its controller-facing config and the
/// lifecycle fields its controller patches. The state itself is the rollout's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Fields {
    /// `{timeout_seconds, local, k8s}` as created (upstream's defaults filled in).
    pub config: Json,
    pub k8s_job_name: Option<String>,
    pub last_attempt_id: Option<String>,
    pub error_message: Option<String>,
    /// Bumped by every non-empty patch.
    pub version: i64,
    pub updated_at: Timestamp,
    /// Position in the completion log (from 1), once a v1 patch made the rollout terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_seq: Option<i64>,
    /// The attempt names its events were posted under, in order of their first event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
}

/// A model server registered with v1's `POST /api/models`: the model it serves, its OpenAI
/// base URL, and the training step of its weights. Keyed by model and endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Model {
    pub model: String,
    pub endpoint: String,
    #[serde(default)]
    pub version: i64,
}

/// One try at running a rollout.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub rollout_id: String,
    pub attempt_id: String,
    pub sequence_id: i64,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    pub status: AttemptStatus,
    pub worker_id: Option<String>,
    pub last_heartbeat_time: Option<Timestamp>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json>,
}

/// A rollout with its latest (or just created) attempt, when it has one.
///
/// Serialized flat; the `attempt` key is absent, not `null`, for a rollout without
/// attempts: the official client tells the two kinds apart by that key alone.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: Rollout,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
}

/// What the store knows of one runner process.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Worker {
    pub worker_id: String,
    pub status: WorkerStatus,
    #[schema(value_type = Option<Object>)]
    pub heartbeat_stats: Option<Json>,
    pub last_heartbeat_time: Option<Timestamp>,
    pub last_dequeue_time: Option<Timestamp>,
    pub last_busy_time: Option<Timestamp>,
    pub last_idle_time: Option<Timestamp>,
    pub current_rollout_id: Option<String>,
    pub current_attempt_id: Option<String>,
}

impl Worker {
    pub(crate) fn new(worker_id: &str) -> Self {
        Self {
            worker_id: worker_id.to_owned(),
            status: WorkerStatus::Unknown,
            heartbeat_stats: None,
            last_heartbeat_time: None,
            last_dequeue_time: None,
            last_busy_time: None,
            last_idle_time: None,
            current_rollout_id: None,
            current_attempt_id: None,
        }
    }
}

/// Prompt template engines the official `PromptTemplate` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TemplateEngine {
    #[serde(rename = "jinja")]
    Jinja,
    #[serde(rename = "f-string")]
    FString,
    #[serde(rename = "poml")]
    Poml,
}

/// The fields of an `LLM` or `ProxyLLM` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LlmResource {
    pub endpoint: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub sampling_parameters: serde_json::Map<String, serde_json::Value>,
}

/// The fields of a `PromptTemplate` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromptTemplateResource {
    pub template: String,
    pub engine: TemplateEngine,
}

/// One training resource, tagged by `resource_type` as upstream's union is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "resource_type")]
pub enum Resource {
    #[serde(rename = "llm")]
    Llm(LlmResource),
    #[serde(rename = "proxy_llm")]
    ProxyLlm(LlmResource),
    #[serde(rename = "prompt_template")]
    PromptTemplate(PromptTemplateResource),
}

/// Resources by name, in the order the client sent them.
pub type NamedResources = indexmap::IndexMap<String, Resource>;

/// A versioned set of named resources.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourcesUpdate {
    pub resources_id: String,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub version: i64,
    #[schema(value_type = std::collections::HashMap<String, Resource>)]
    pub resources: Arc<NamedResources>,
}

/// The `{items, limit, offset, total}` page every query returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub limit: i64,
    pub offset: i64,
    pub total: usize,
}

/// Field names of each queried model, in declaration order: what `sort_by` may name.
pub mod fields {
    /// `Rollout` fields (`attempt` is not sortable upstream).
    pub const ROLLOUT: &[&str] = &[
        "rollout_id",
        "input",
        "start_time",
        "end_time",
        "mode",
        "resources_id",
        "status",
        "config",
        "metadata",
    ];
    /// `Attempt` fields.
    pub const ATTEMPT: &[&str] = &[
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "start_time",
        "end_time",
        "status",
        "worker_id",
        "last_heartbeat_time",
        "metadata",
    ];
    /// `ResourcesUpdate` fields.
    pub const RESOURCES: &[&str] = &[
        "resources_id",
        "create_time",
        "update_time",
        "version",
        "resources",
    ];
    /// `Worker` fields.
    pub const WORKER: &[&str] = &[
        "worker_id",
        "status",
        "heartbeat_stats",
        "last_heartbeat_time",
        "last_dequeue_time",
        "last_busy_time",
        "last_idle_time",
        "current_rollout_id",
        "current_attempt_id",
    ];
    /// `Span` fields.
    pub const SPAN: &[&str] = &[
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "status",
        "attributes",
        "events",
        "links",
        "start_time",
        "end_time",
        "context",
        "parent",
        "resource",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Json {
        Arc::from(RawValue::from_string(s.to_owned()).unwrap())
    }

    #[test]
    fn rollout_without_attempt_has_no_attempt_key() {
        let view = RolloutView {
            rollout: Rollout {
                rollout_id: "ro-1".into(),
                input: raw(r#"{"task":1}"#),
                start_time: 1.5,
                end_time: None,
                mode: None,
                resources_id: None,
                status: RolloutStatus::Queuing,
                config: RolloutConfig::default(),
                metadata: Some(raw("{}")),
                v1: None,
            },
            attempt: None,
        };
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(
            text,
            r#"{"rollout_id":"ro-1","input":{"task":1},"start_time":1.5,"end_time":null,"mode":null,"resources_id":null,"status":"queuing","config":{"timeout_seconds":null,"unresponsive_seconds":null,"max_attempts":1,"retry_condition":[]},"metadata":{}}"#
        );
    }

    #[test]
    fn resources_fill_defaults_and_reject_unknown_tags() {
        let parsed: NamedResources = serde_json::from_str(
            r#"{"main":{"resource_type":"llm","endpoint":"http://x","model":"m"}}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&parsed).unwrap();
        assert_eq!(
            text,
            r#"{"main":{"resource_type":"llm","endpoint":"http://x","model":"m","api_key":null,"sampling_parameters":{}}}"#
        );
        assert!(
            serde_json::from_str::<NamedResources>(r#"{"x":{"resource_type":"nope"}}"#).is_err()
        );
    }
}
