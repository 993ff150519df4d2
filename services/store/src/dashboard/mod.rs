//! The store's dashboard: read-only HTML pages at `/` (overview) and under `/ui/`
//! (rollouts, one rollout with its attempts, span waterfall and LLM calls, resources,
//! workers, the API reference), rendered in this process from the same [`Store`] calls the
//! API makes, so a page shows exactly what a client would read.
//!
//! Handlers here parse the query and fetch; [`views`] turns what they fetched into markup;
//! [`calls`] reads LLM calls and rewards out of span attributes; [`api_ref`] renders
//! `/openapi.json`. The layout, assets and waterfall are shared with the AgentOps endpoint
//! (`agl_common::ui`). The pages sit behind the same key as the API.

mod api_ref;
pub mod calls;
mod views;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use parking_lot::Mutex;

use agl_common::ui::{self, Shell};

use crate::core::{
    PageRequest, ResourcesQuery, RolloutQuery, SpanQuery, Store, StoreError, WorkerQuery,
};
use crate::model::{Attempt, RolloutMode, RolloutStatus};

pub(crate) const SHELL: Shell = Shell {
    service: "agl-store",
    nav: &[
        ("/", "Overview"),
        ("/ui/rollouts", "Rollouts"),
        ("/ui/resources", "Resources"),
        ("/ui/workers", "Workers"),
        ("/ui/api", "API"),
    ],
};

/// Rows per page of the rollouts list unless `limit` says otherwise, and the most it may say.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Spans drawn on one rollout page; a larger attempt is cut (the API has them all).
const MAX_SPANS: usize = 20_000;
/// Throughput samples: one every 10 s over the last 10 minutes.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES: usize = 61;

/// Where the store keeps its data, for the overview.
#[derive(Debug, Clone, Default)]
pub struct StorageInfo {
    /// The SQLite file (its size is shown with its WAL).
    pub file: Option<PathBuf>,
    /// A printable location (a file path or a database URL without its password).
    pub location: Option<String>,
}

/// Totals at one moment, for the throughput of the last minutes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub t: f64,
    pub finished: usize,
    pub created: usize,
    pub spans: usize,
}

#[derive(Clone)]
struct Dash {
    store: Arc<Store>,
    storage: Arc<StorageInfo>,
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

/// What a page can fail with, answered as an HTML page.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let status = match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            // The API's mapping of store errors, so both faces agree on the status.
            Self::Store(e) => crate::api::ApiError::from(e).into_response().status(),
        };
        SHELL.error(status, &message)
    }
}

type PageResult = Result<Response, PageError>;

/// The dashboard's routes; samples the store's totals in the background while `store` lives.
pub fn routes(store: Arc<Store>, storage: StorageInfo) -> Router {
    let samples = Arc::new(Mutex::new(VecDeque::with_capacity(SAMPLES)));
    tokio::spawn(sample(Arc::downgrade(&store), Arc::clone(&samples)));
    Router::new()
        .route("/", get(overview))
        .route("/ui", get(|| async { Redirect::to("/") }))
        .route("/ui/", get(|| async { Redirect::to("/") }))
        .route("/ui/rollouts", get(rollouts))
        .route("/ui/rollouts/{rollout_id}", get(rollout))
        .route("/ui/rollouts/{rollout_id}/spans/{span_id}", get(span))
        .route("/ui/rollouts/{rollout_id}/subtree/{span_id}", get(subtree))
        .route("/ui/rollouts/{rollout_id}/calls", get(calls))
        .route("/ui/resources", get(resources))
        .route("/ui/workers", get(workers))
        .route("/ui/api", get(api_reference))
        .merge(ui::assets())
        .with_state(Dash {
            store,
            storage: Arc::new(storage),
            samples,
        })
}

fn totals(store: &Store) -> Sample {
    let g = store.gauges();
    let finished = g
        .rollouts_by_status
        .iter()
        .filter(|(s, _)| s.is_finished())
        .map(|(_, n)| n)
        .sum();
    Sample {
        t: store.now(),
        finished,
        created: g.rollouts_by_status.iter().map(|(_, n)| n).sum(),
        spans: g.spans,
    }
}

async fn sample(store: Weak<Store>, samples: Arc<Mutex<VecDeque<Sample>>>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if store.is_shared() {
            // Shared storage: the totals come from the database; refresh them first.
            store.refresh_gauges().await;
        }
        let s = totals(&store);
        let mut ring = samples.lock();
        if ring.len() == SAMPLES {
            ring.pop_front();
        }
        ring.push_back(s);
    }
}

async fn overview(State(d): State<Dash>) -> PageResult {
    let stats = d.store.statistics().await?;
    let gauges = d.store.gauges();
    let workers = d
        .store
        .query_workers(&WorkerQuery {
            page: PageRequest {
                limit: 10,
                sort_by: Some("last_heartbeat_time".into()),
                descending: true,
                ..PageRequest::default()
            },
            ..WorkerQuery::default()
        })
        .await?;
    let latest = d.store.latest_resources().await?;
    let mut samples: Vec<Sample> = d.samples.lock().iter().copied().collect();
    samples.push(totals(&d.store));
    let storage_bytes = d.storage.file.as_ref().map(|f| {
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = f.clone().into_os_string();
        wal.push("-wal");
        size(f.clone()) + size(PathBuf::from(wal))
    });
    Ok(SHELL.page(
        "Overview",
        "/",
        &views::overview(&views::Overview {
            stats: &stats,
            gauges: &gauges,
            workers: &workers.items,
            workers_total: workers.total,
            latest: latest.as_ref(),
            samples: &samples,
            storage: &d.storage,
            storage_bytes,
            now: d.store.now(),
        }),
    ))
}

/// The rollouts list's query string, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListParams {
    pub status: Option<RolloutStatus>,
    pub mode: Option<RolloutMode>,
    pub q: String,
    pub from: String,
    pub to: String,
    pub sort: &'static str,
    pub desc: bool,
    pub offset: usize,
    pub limit: usize,
}

/// Columns the list sorts by: `created` is the store's own order (no sort needed).
pub(crate) const SORTS: &[&str] = &["created", "start_time", "end_time", "status", "rollout_id"];

impl ListParams {
    fn parse(raw: Option<&str>) -> Result<(Self, RolloutQuery), PageError> {
        let mut p = Self {
            sort: "created",
            desc: true,
            limit: PAGE,
            ..Self::default()
        };
        let mut q = RolloutQuery::default();
        let bad = |what: &str, v: &str| PageError::BadRequest(format!("unknown {what} {v:?}"));
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim();
            match &*k {
                "status" if !v.is_empty() => {
                    let s = RolloutStatus::parse(v).ok_or_else(|| bad("status", v))?;
                    p.status = Some(s);
                    q.status_in = Some(vec![s]);
                }
                "mode" if !v.is_empty() => {
                    let m = RolloutMode::parse(v).ok_or_else(|| bad("mode", v))?;
                    p.mode = Some(m);
                    q.mode_in = Some(vec![m]);
                }
                "q" if !v.is_empty() => {
                    p.q = v.to_owned();
                    q.rollout_id_contains = Some(v.to_owned());
                }
                "from" | "to" if !v.is_empty() => {
                    let t = ui::format::parse_local(v).ok_or_else(|| {
                        PageError::BadRequest(format!(
                            "{k} must be a date and time like 2026-12-04T19:30, not {v:?}"
                        ))
                    })?;
                    if k == "from" {
                        p.from = v.to_owned();
                        q.started_from = Some(t);
                    } else {
                        p.to = v.to_owned();
                        q.started_before = Some(t);
                    }
                }
                "sort" if !v.is_empty() => {
                    p.sort = SORTS
                        .iter()
                        .copied()
                        .find(|s| *s == v)
                        .ok_or_else(|| bad("sort column", v))?;
                }
                "order" if !v.is_empty() => {
                    p.desc = match v {
                        "desc" => true,
                        "asc" => false,
                        _ => return Err(bad("order", v)),
                    };
                }
                "offset" | "limit" if !v.is_empty() => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| PageError::BadRequest(format!("{k} must be a count")))?;
                    if k == "offset" {
                        p.offset = n;
                    } else {
                        p.limit = n.clamp(1, MAX_PAGE);
                    }
                }
                _ => {}
            }
        }
        Ok((p, q))
    }

    /// The query string of this list at another offset.
    pub fn href(&self, offset: usize) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(st) = self.status {
            s.append_pair("status", st.as_str());
        }
        if let Some(m) = self.mode {
            s.append_pair("mode", m.as_str());
        }
        for (k, v) in [("q", &self.q), ("from", &self.from), ("to", &self.to)] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("sort", self.sort);
        s.append_pair("order", if self.desc { "desc" } else { "asc" });
        if offset > 0 {
            s.append_pair("offset", &offset.to_string());
        }
        if self.limit != PAGE {
            s.append_pair("limit", &self.limit.to_string());
        }
        format!("/ui/rollouts?{}", s.finish())
    }
}

fn page_of(offset: usize, limit: usize) -> PageRequest {
    PageRequest {
        limit: i64::try_from(limit).unwrap_or(i64::MAX),
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        ..PageRequest::default()
    }
}

async fn rollouts(State(d): State<Dash>, RawQuery(raw): RawQuery) -> PageResult {
    let (p, mut q) = ListParams::parse(raw.as_deref())?;
    q.page = page_of(p.offset, p.limit);
    if p.sort == "created" {
        q.newest_first = p.desc;
    } else {
        q.page.sort_by = Some(p.sort.to_owned());
        q.page.descending = p.desc;
    }
    let page = d.store.query_rollouts(&q).await?;
    let (items, total) = (page.items, page.total);
    Ok(SHELL.page(
        "Rollouts",
        "/ui/rollouts",
        &views::rollouts(&p, &items, total, d.store.now()),
    ))
}

#[derive(Debug, Default)]
struct RolloutParams {
    attempt: Option<String>,
}

fn rollout_params(raw: Option<&str>) -> RolloutParams {
    let mut p = RolloutParams::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == "attempt" && !v.is_empty() {
            p.attempt = Some(v.into_owned());
        }
    }
    p
}

/// A rollout's attempts, the attempt a page shows (the one asked, else the latest) and that
/// attempt's spans read for display.
struct AttemptSpans {
    attempts: Vec<Attempt>,
    selected: Option<String>,
    spans: views::ReadSpans,
    total_spans: usize,
}

async fn attempt_spans(
    d: &Dash,
    rollout_id: &str,
    raw: Option<&str>,
) -> Result<AttemptSpans, PageError> {
    let attempts = d
        .store
        .query_attempts(rollout_id, &PageRequest::default())
        .await?
        .items;
    let params = rollout_params(raw);
    let selected = match params.attempt {
        Some(a) if attempts.iter().any(|x| x.attempt_id == a) => Some(a),
        Some(a) => {
            return Err(PageError::NotFound(format!(
                "rollout {rollout_id:?} has no attempt {a:?}"
            )));
        }
        None => attempts.last().map(|a| a.attempt_id.clone()),
    };
    let Some(attempt) = &selected else {
        return Ok(AttemptSpans {
            attempts,
            selected,
            spans: views::ReadSpans::default(),
            total_spans: 0,
        });
    };
    let page = d
        .store
        .query_spans(&SpanQuery {
            rollout_id: rollout_id.to_owned(),
            attempt_id: Some(attempt.clone()),
            page: PageRequest {
                limit: i64::try_from(MAX_SPANS + 1).unwrap_or(i64::MAX),
                ..PageRequest::default()
            },
            ..SpanQuery::default()
        })
        .await?;
    let spans = views::read_spans(&page.items, rollout_id, selected.as_deref());
    Ok(AttemptSpans {
        attempts,
        selected,
        spans,
        total_spans: page.total,
    })
}

async fn rollout(
    State(d): State<Dash>,
    Path(rollout_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let view =
        d.store.get_rollout(&rollout_id).await?.ok_or_else(|| {
            PageError::NotFound(format!("no rollout {rollout_id:?} in this store"))
        })?;
    let a = attempt_spans(&d, &rollout_id, raw.as_deref()).await?;
    Ok(SHELL.page(
        &format!("Rollout {rollout_id}"),
        "/ui/rollouts",
        &views::rollout(&views::RolloutPage {
            view: &view,
            attempts: &a.attempts,
            selected: a.selected.as_deref(),
            spans: &a.spans,
            total_spans: a.total_spans,
            now: d.store.now(),
        }),
    ))
}

/// The waterfall rows under one span (a folded row's button loads them).
async fn subtree(
    State(d): State<Dash>,
    Path((rollout_id, span_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let a = attempt_spans(&d, &rollout_id, raw.as_deref()).await?;
    let url = views::subtree_url(&rollout_id, a.selected.as_deref());
    let rows = ui::waterfall::subtree(&a.spans.rows, &span_id, &url).ok_or_else(|| {
        PageError::NotFound(format!("rollout {rollout_id:?} has no span {span_id:?}"))
    })?;
    Ok(ui::fragment(rows))
}

/// LLM calls of an attempt from an offset on (the "more" button of a long rollout).
async fn calls(
    State(d): State<Dash>,
    Path(rollout_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let offset = form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| PageError::BadRequest("offset must be a count".into()))
        })
        .transpose()?
        .unwrap_or(0);
    let a = attempt_spans(&d, &rollout_id, raw.as_deref()).await?;
    Ok(ui::fragment(views::more_calls(
        &rollout_id,
        a.selected.as_deref(),
        &a.spans.calls,
        offset,
    )))
}

async fn span(
    State(d): State<Dash>,
    Path((rollout_id, span_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let params = rollout_params(raw.as_deref());
    let found = d
        .store
        .query_spans(&SpanQuery {
            rollout_id: rollout_id.clone(),
            attempt_id: params.attempt,
            span_id: Some(span_id.clone()),
            ..SpanQuery::default()
        })
        .await?;
    let doc = found.items.first().ok_or_else(|| {
        PageError::NotFound(format!("rollout {rollout_id:?} has no span {span_id:?}"))
    })?;
    Ok(ui::fragment(views::span_detail(doc)))
}

async fn resources(State(d): State<Dash>, RawQuery(raw): RawQuery) -> PageResult {
    let offset = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "offset")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let page = d
        .store
        .query_resources(&ResourcesQuery {
            page: PageRequest {
                limit: 20,
                offset: i64::try_from(offset).unwrap_or(0),
                sort_by: Some("version".into()),
                descending: true,
            },
            ..ResourcesQuery::default()
        })
        .await?;
    let latest = d.store.latest_resources().await?;
    Ok(SHELL.page(
        "Resources",
        "/ui/resources",
        &views::resources(
            &page.items,
            page.total,
            offset,
            latest.map(|r| r.resources_id),
        ),
    ))
}

async fn workers(State(d): State<Dash>) -> PageResult {
    let page = d
        .store
        .query_workers(&WorkerQuery {
            page: PageRequest {
                sort_by: Some("worker_id".into()),
                ..PageRequest::default()
            },
            ..WorkerQuery::default()
        })
        .await?;
    Ok(SHELL.page(
        "Workers",
        "/ui/workers",
        &views::workers(&page.items, d.store.now()),
    ))
}

async fn api_reference() -> Response {
    SHELL.page("API reference", "/ui/api", &api_ref::page())
}

/// Counts by status as a map, for views.
pub(crate) fn by_status<T: Copy + Eq + std::hash::Hash>(pairs: &[(T, usize)]) -> HashMap<T, usize> {
    pairs.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_round_trip_through_their_links() {
        let (p, q) = ListParams::parse(Some(
            "status=succeeded&mode=val&q=ro-1&from=2026-12-04T10%3A00&sort=end_time&order=asc&limit=20",
        ))
        .unwrap();
        assert_eq!(q.status_in, Some(vec![RolloutStatus::Succeeded]));
        assert_eq!(q.mode_in, Some(vec![RolloutMode::Val]));
        assert_eq!(q.rollout_id_contains.as_deref(), Some("ro-1"));
        assert!(q.started_from.is_some() && q.started_before.is_none());
        let link = p.href(40);
        let (again, _) = ListParams::parse(link.split_once('?').map(|(_, s)| s)).unwrap();
        assert_eq!(again.href(40), link);
        assert_eq!(again.offset, 40);
        assert_eq!(
            (again.sort, again.desc, again.limit),
            ("end_time", false, 20)
        );
    }

    #[test]
    fn bad_filters_are_named() {
        for raw in [
            "status=done",
            "mode=eval",
            "sort=input",
            "order=up",
            "from=yesterday",
            "limit=x",
        ] {
            let err = ListParams::parse(Some(raw)).unwrap_err();
            assert!(matches!(err, PageError::BadRequest(_)), "{raw}");
        }
        // Empty fields are "any".
        let (p, q) = ListParams::parse(Some("status=&mode=&q=&sort=&order=")).unwrap();
        assert!(q.status_in.is_none() && q.mode_in.is_none());
        assert_eq!((p.sort, p.desc), ("created", true));
    }
}
