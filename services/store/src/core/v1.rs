//! The changes the upstream v1 protocol (`agl-server`'s `/api`) makes, on the same rows
//! and through the same transitions as every other protocol: a v1 rollout is a rollout
//! (its v1-only fields ride along in [`V1Fields`]), a v1 event is a span of it, and a v1
//! state change is a status change (`State::set_rollout_status`), so waiters, counts,
//! storage and replicas see it as any other. What is v1's own is written here once: its
//! state machine ([`V1State::can_become`]), caller-chosen ids with idempotent creation,
//! the patch of its lifecycle fields with its version bump, and the completion log.

use std::sync::Arc;

use super::{NewRollout, RolloutQuery, Store, StoreError};
use crate::model::{Rollout, RolloutStatus, StoredSpan, V1Fields, V1Model, V1State};
use crate::persist::Need;

/// The counter behind v1's completion log (`GET /api/rollouts/terminal`): a sequence
/// counter under a key no rollout can have (v1 refuses caller ids with a `/`, and the
/// store's own ids have none), so that every backend keeps it as it keeps the others.
pub const COMPLETION_LOG: &str = "/agl/v1/completions";

/// The setting that holds v1's model registry (JSON: a list of [`V1Model`]).
const MODELS: &str = "v1.models";

/// A v1 patch of a rollout's lifecycle: `Some` for each field the caller sent, to a value
/// or to `null` (upstream applies exactly the fields that were set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct V1Patch {
    pub state: Option<V1State>,
    pub k8s_job_name: Option<Option<String>>,
    pub last_attempt_id: Option<Option<String>>,
    pub error_message: Option<Option<String>>,
}

impl V1Patch {
    /// Sets nothing: answered with the rollout as it is, nothing written, no version bump.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl V1Fields {
    /// What v1 shows of a rollout another protocol created: upstream's defaults.
    pub fn defaults_for(rollout: &Rollout) -> Self {
        Self {
            config: serde_json::value::RawValue::from_string(
                r#"{"timeout_seconds":3600,"local":null,"k8s":null}"#.to_owned(),
            )
            .expect("valid JSON")
            .into(),
            k8s_job_name: None,
            last_attempt_id: None,
            error_message: None,
            version: 1,
            updated_at: rollout.end_time.unwrap_or(rollout.start_time),
            terminal_seq: None,
            attempts: Vec::new(),
        }
    }
}

/// A rollout's v1 fields, made with upstream's defaults the first time v1 changes a
/// rollout another protocol created.
fn v1_fields(rollout: &mut Rollout) -> &mut V1Fields {
    if rollout.v1.is_none() {
        rollout.v1 = Some(Box::new(V1Fields::defaults_for(rollout)));
    }
    rollout.v1.as_mut().expect("set above")
}

impl Store {
    /// Creates v1 rollouts in order, each `queuing`. A caller's id that exists already is
    /// answered with that rollout unchanged (retries are safe). They are not put in the
    /// dequeue queue: v1's controller claims them by patching them `running`, and a 0.3
    /// runner dequeuing from the same store would otherwise run them a second time.
    pub async fn v1_create(&self, news: Vec<NewRollout>) -> Result<Vec<Rollout>, StoreError> {
        let given: Vec<String> = news.iter().filter_map(|n| n.rollout_id.clone()).collect();
        let need = Need {
            latest_resources: true,
            ..Need::rollouts(given)
        };
        let limit = self.queue_limit();
        self.change(need, true, |st, now| {
            st.check_queue_room(limit, news.len())?;
            Ok(news
                .iter()
                .map(|new| {
                    if let Some(entry) = new.rollout_id.as_ref().and_then(|id| st.rollouts.get(id))
                    {
                        return entry.rollout.clone();
                    }
                    let mut new = new.clone();
                    if let Some(v1) = new.v1.as_mut() {
                        v1.updated_at = now;
                    }
                    let id = st.insert_rollout(new, RolloutStatus::Queuing, now);
                    st.rollouts[&id].rollout.clone()
                })
                .collect())
        })
        .await
    }

    /// Applies a v1 patch: the state through v1's state machine (409 otherwise), the
    /// lifecycle fields as sent, `version` and `updated_at` bumped. A rollout that becomes
    /// terminal takes the next place in the completion log.
    pub async fn v1_patch(&self, rollout_id: &str, patch: V1Patch) -> Result<Rollout, StoreError> {
        let need = Need {
            sequences: true,
            ..Need::rollouts([rollout_id, COMPLETION_LOG])
        };
        self.change(need, true, |st, now| {
            let entry = st
                .rollouts
                .get(rollout_id)
                .ok_or_else(|| StoreError::RolloutNotFound(rollout_id.to_owned()))?;
            if patch.is_empty() {
                return Ok(entry.rollout.clone());
            }
            let from = V1State::of(entry.rollout.status);
            if let Some(to) = patch.state
                && !from.can_become(to)
            {
                return Err(StoreError::InvalidTransition {
                    rollout_id: rollout_id.to_owned(),
                    from: from.as_str(),
                    to: to.as_str(),
                });
            }
            let terminal_seq = patch.state.filter(|s| s.is_terminal()).map(|_| {
                let counter = st.sequence.entry(COMPLETION_LOG.to_owned()).or_insert(0);
                *counter += 1;
                *counter
            });
            if terminal_seq.is_some() {
                st.mark_sequence(COMPLETION_LOG);
            }
            let entry = st.rollouts.get_mut(rollout_id).expect("looked up above");
            let v1 = v1_fields(&mut entry.rollout);
            let patch = patch.clone();
            if let Some(v) = patch.k8s_job_name {
                v1.k8s_job_name = v;
            }
            if let Some(v) = patch.last_attempt_id {
                v1.last_attempt_id = v;
            }
            if let Some(v) = patch.error_message {
                v1.error_message = v;
            }
            v1.version += 1;
            v1.updated_at = now;
            if terminal_seq.is_some() {
                v1.terminal_seq = terminal_seq;
            }
            st.mark_rollout(rollout_id);
            if let Some(to) = patch.state {
                st.set_rollout_status(rollout_id, to.status(), now);
            }
            Ok(st.rollouts[rollout_id].rollout.clone())
        })
        .await
    }

    /// The completion log from place `after` on, at most `limit` places: the rollouts still
    /// stored that hold those places, in order, and the log's length (deleted rollouts keep
    /// their places). Finding them reads every finished rollout: the log is for tests and
    /// small stores (upstream's trainer never reads it; it polls each rollout).
    pub async fn v1_completions(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<Rollout>, i64), StoreError> {
        let need = Need {
            sequences: true,
            ..Need::rollouts([COMPLETION_LOG])
        };
        let total = self
            .change(need, false, |st, _now| {
                Ok(st.sequence.get(COMPLETION_LOG).copied().unwrap_or(0))
            })
            .await?;
        let end = after.saturating_add(limit).min(total);
        if end <= after {
            return Ok((Vec::new(), total));
        }
        let finished = RolloutQuery {
            status_in: Some(
                RolloutStatus::ALL
                    .iter()
                    .copied()
                    .filter(|s| s.is_finished())
                    .collect(),
            ),
            ..RolloutQuery::default()
        };
        let mut found: Vec<(i64, Rollout)> = self
            .query_rollouts(&finished)
            .await?
            .items
            .into_iter()
            .filter_map(|view| {
                let seq = view.rollout.v1.as_ref()?.terminal_seq?;
                (seq > after && seq <= end).then_some((seq, view.rollout))
            })
            .collect();
        found.sort_by_key(|(seq, _)| *seq);
        Ok((found.into_iter().map(|(_, r)| r).collect(), total))
    }

    /// The model servers registered, in registration order.
    pub async fn v1_models(&self) -> Result<Vec<V1Model>, StoreError> {
        let text = match &self.shared {
            Some(db) => db.meta(MODELS).await?,
            None => self.state.lock().meta.get(MODELS).cloned(),
        };
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Registers model servers: one already registered under the same model and endpoint
    /// is replaced in place (its version updated), others are appended. `clear` first
    /// removes every registration (v1's `DELETE /api/models`).
    pub async fn v1_register_models(
        &self,
        models: Vec<V1Model>,
        clear: bool,
    ) -> Result<(), StoreError> {
        let need = Need {
            meta: vec![MODELS.to_owned()],
            ..Need::default()
        };
        self.change(need, false, |st, _now| {
            let mut all: Vec<V1Model> = if clear {
                Vec::new()
            } else {
                st.meta
                    .get(MODELS)
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default()
            };
            for m in &models {
                match all
                    .iter_mut()
                    .find(|o| o.model == m.model && o.endpoint == m.endpoint)
                {
                    Some(old) => *old = m.clone(),
                    None => all.push(m.clone()),
                }
            }
            let text =
                (!all.is_empty()).then(|| serde_json::to_string(&all).expect("models serialize"));
            st.set_meta(MODELS, text);
            Ok(())
        })
        .await
    }

    /// Deletes a rollout with its attempts, spans and counter (v1's `DELETE`, which its
    /// trainer sends for every finished rollout to bound what the server keeps). An unknown
    /// id is no error. A deleted rollout keeps its place in the completion log's count.
    pub async fn delete_rollout(&self, rollout_id: &str) -> Result<(), StoreError> {
        self.change(Need::rollouts([rollout_id]), false, |st, _now| {
            st.delete_rollout(rollout_id);
            Ok(())
        })
        .await
    }

    /// Appends a v1 event, written as a span of the rollout (its document made by the
    /// caller, outside the lock): the next sequence id of the rollout is its place.
    pub async fn v1_add_event(
        &self,
        rollout_id: &str,
        span: StoredSpan,
    ) -> Result<Arc<StoredSpan>, StoreError> {
        let need = Need {
            sequences: true,
            attempt_workers: false,
            spans: self.stored_span_keys([(&rollout_id.to_owned(), &span)]),
            ..Need::rollouts([rollout_id])
        };
        let rollout_id = rollout_id.to_owned();
        let limit = self.span_limit();
        let stored = self
            .change_once(need, move |st, _now| {
                if !st.rollouts.contains_key(&rollout_id) {
                    return Err(StoreError::RolloutNotFound(rollout_id));
                }
                st.check_span_room(&rollout_id, limit)?;
                let counter = st.sequence.entry(rollout_id.clone()).or_insert(0);
                *counter += 1;
                let mut span = span;
                span.set_sequence_id(*counter);
                st.mark_sequence(&rollout_id);
                // An attempt's first event names it among the rollout's attempts.
                let attempt_id = span.attempt_id().into_owned();
                let rollout = &mut st.rollouts.get_mut(&rollout_id).expect("checked").rollout;
                let v1 = v1_fields(rollout);
                if !v1.attempts.contains(&attempt_id) {
                    v1.attempts.push(attempt_id);
                    st.mark_rollout(&rollout_id);
                }
                // A duplicate would need the same random span id twice in one attempt.
                st.insert_span(&rollout_id, span)
                    .ok_or_else(|| StoreError::RolloutNotFound(rollout_id.clone()))
            })
            .await?;
        self.counters
            .spans_stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(stored)
    }
}
