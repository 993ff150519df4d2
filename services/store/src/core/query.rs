//! Sorting and pagination shared by every query, with upstream's ordering rules.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{PageRequest, StoreError};
use crate::model::{Attempt, Page, ResourcesUpdate, Rollout, RolloutMode, StoredSpan, Worker};

// ----- sorting and pagination ---------------------------------------------------------

/// A value to sort by. `None` from a key function means "not comparable" (a JSON object).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SortKey {
    Num(f64),
    Str(String),
}

impl SortKey {
    fn cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Num(a), Self::Num(b)) => Some(a.total_cmp(b)),
            (Self::Str(a), Self::Str(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

pub(super) fn time_key(t: Option<f64>) -> Option<SortKey> {
    Some(SortKey::Num(t.unwrap_or(f64::INFINITY)))
}

pub(super) fn str_key(s: Option<&str>) -> Option<SortKey> {
    Some(SortKey::Str(s.unwrap_or_default().to_owned()))
}

#[allow(clippy::cast_precision_loss)]
pub(super) fn int_key(i: i64) -> Option<SortKey> {
    Some(SortKey::Num(i as f64))
}

pub(super) fn json_key(j: Option<&RawValue>) -> Option<SortKey> {
    let Some(j) = j else {
        return Some(SortKey::Str(String::new()));
    };
    match serde_json::from_str::<serde_json::Value>(j.get()).ok()? {
        serde_json::Value::Number(n) => n.as_f64().map(SortKey::Num),
        serde_json::Value::String(s) => Some(SortKey::Str(s)),
        serde_json::Value::Bool(b) => Some(SortKey::Num(f64::from(u8::from(b)))),
        serde_json::Value::Null => Some(SortKey::Str(String::new())),
        _ => None,
    }
}

pub(super) fn rollout_key(r: &Rollout, field: &str) -> Option<SortKey> {
    match field {
        "rollout_id" => str_key(Some(&r.rollout_id)),
        "start_time" => time_key(Some(r.start_time)),
        "end_time" => time_key(r.end_time),
        "mode" => str_key(r.mode.map(RolloutMode::as_str)),
        "resources_id" => str_key(r.resources_id.as_deref()),
        "status" => str_key(Some(r.status.as_str())),
        "input" => json_key(Some(&r.input)),
        _ => None,
    }
}

pub(super) fn attempt_key(a: &&Attempt, field: &str) -> Option<SortKey> {
    match field {
        "rollout_id" => str_key(Some(&a.rollout_id)),
        "attempt_id" => str_key(Some(&a.attempt_id)),
        "sequence_id" => int_key(a.sequence_id),
        "start_time" => time_key(Some(a.start_time)),
        "end_time" => time_key(a.end_time),
        "status" => str_key(Some(a.status.as_str())),
        "worker_id" => str_key(a.worker_id.as_deref()),
        "last_heartbeat_time" => time_key(a.last_heartbeat_time),
        _ => None,
    }
}

pub(super) fn resources_key(r: &&ResourcesUpdate, field: &str) -> Option<SortKey> {
    match field {
        "resources_id" => str_key(Some(&r.resources_id)),
        "create_time" => time_key(Some(r.create_time)),
        "update_time" => time_key(Some(r.update_time)),
        "version" => int_key(r.version),
        _ => None,
    }
}

pub(super) fn worker_key(w: &&Worker, field: &str) -> Option<SortKey> {
    match field {
        "worker_id" => str_key(Some(&w.worker_id)),
        "status" => str_key(Some(w.status.as_str())),
        "last_heartbeat_time" => time_key(w.last_heartbeat_time),
        "last_dequeue_time" => time_key(w.last_dequeue_time),
        "last_busy_time" => time_key(w.last_busy_time),
        "last_idle_time" => time_key(w.last_idle_time),
        "current_rollout_id" => str_key(w.current_rollout_id.as_deref()),
        "current_attempt_id" => str_key(w.current_attempt_id.as_deref()),
        _ => None,
    }
}

pub(super) fn span_key(rollout_id: &str, s: &Arc<StoredSpan>, field: &str) -> Option<SortKey> {
    match field {
        "rollout_id" => str_key(Some(rollout_id)),
        "attempt_id" => str_key(Some(&s.attempt_id())),
        "sequence_id" => int_key(s.sequence_id()),
        "trace_id" => str_key(Some(&s.trace_id())),
        "span_id" => str_key(Some(&s.span_id())),
        "parent_id" => str_key(s.parent_id().as_deref()),
        "name" => str_key(Some(&s.name())),
        "start_time" => time_key(s.start_time()),
        "end_time" => time_key(s.end_time()),
        _ => None,
    }
}

pub(super) trait PageExt<T> {
    fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U>;
}

impl<T> PageExt<T> for Page<T> {
    fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            limit: self.limit,
            offset: self.offset,
            total: self.total,
        }
    }
}

/// Sorts (stable; `desc` keeps equal items in their original order, as Python's
/// `sorted(reverse=True)` does) and cuts one page out of `items`.
pub(super) fn paginate<T>(
    mut items: Vec<T>,
    page: &PageRequest,
    key: impl Fn(&T, &str) -> Option<SortKey>,
) -> Result<Page<T>, StoreError> {
    if let Some(field) = &page.sort_by {
        let keys: Vec<Option<SortKey>> = items.iter().map(|it| key(it, field)).collect();
        let unsortable = || StoreError::Unsortable {
            field: field.clone(),
        };
        if items.len() > 1 {
            let mut order: Vec<usize> = (0..items.len()).collect();
            let mut failed = false;
            order.sort_by(|&a, &b| {
                let ord = match (&keys[a], &keys[b]) {
                    (Some(x), Some(y)) => x.cmp(y).unwrap_or_else(|| {
                        failed = true;
                        Ordering::Equal
                    }),
                    _ => {
                        failed = true;
                        Ordering::Equal
                    }
                };
                if page.descending { ord.reverse() } else { ord }
            });
            if failed {
                return Err(unsortable());
            }
            let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
            items = order
                .into_iter()
                .map(|i| slots[i].take().expect("each index once"))
                .collect();
        }
    }
    let total = items.len();
    let offset = usize::try_from(page.offset.max(0)).unwrap_or(usize::MAX);
    let items: Vec<T> = if page.limit < 0 {
        items.into_iter().skip(offset).collect()
    } else {
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        items.into_iter().skip(offset).take(limit).collect()
    };
    Ok(Page {
        items,
        limit: page.limit,
        offset: page.offset,
        total,
    })
}
