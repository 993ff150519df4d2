//! Reads of a shared Postgres database: the [`History`] the core answers queries from
//! (every read sees what was committed before it began), the totals, workers and the
//! latest resources. The core calls [`History`] from blocking threads, so its methods run
//! the async queries to completion there.

use std::future::Future;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;

use super::{describe, pg_err};
use crate::model::{Attempt, ResourcesUpdate, Rollout, RolloutView, StoredSpan, Worker};
use crate::persist::{
    Counts, History, RolloutFilter, RolloutOrder, RolloutRows, StorageError, Totals,
};
use crate::sql::{self, Postgres, SqlArg};

/// A pooled connection.
pub(super) async fn client(pool: &Pool) -> Result<Object, StorageError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => {
            StorageError(format!("cannot reach the database: {}", describe(&e)))
        }
        other => StorageError(format!("cannot reach the database: {other}")),
    })
}

fn doc<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|e| StorageError(format!("bad {what} document: {e}")))
}

fn span_doc(text: &str) -> Result<StoredSpan, StorageError> {
    StoredSpan::from_json(text).map_err(|e| StorageError(format!("bad span document: {e}")))
}

/// Rollouts with their latest attempts; a filter and an order follow.
const ROLLOUT_VIEWS: &str = "SELECT r.doc, (SELECT a.doc FROM agl_attempts a \
    WHERE a.rollout_id = r.rollout_id ORDER BY a.sequence_id DESC LIMIT 1) FROM agl_rollouts r";

/// The `WHERE` clause of a rollout filter and its parameters, in order.
fn rollout_filter_sql(filter: RolloutFilter<'_>) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let (clause, args) = sql::rollout_filter::<Postgres>(filter);
    let args = args
        .into_iter()
        .map(|arg| -> Box<dyn ToSql + Sync + Send> {
            match arg {
                SqlArg::Text(t) => Box::new(t),
                SqlArg::Real(x) => Box::new(x),
                SqlArg::Texts(list) => Box::new(list),
            }
        })
        .collect();
    (clause, args)
}

fn params(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect()
}

fn views(rows: &[tokio_postgres::Row]) -> Result<Vec<RolloutView>, StorageError> {
    rows.iter()
        .map(|row| {
            Ok(RolloutView {
                rollout: doc(row.get::<_, &str>(0), "rollout")?,
                attempt: row
                    .get::<_, Option<&str>>(1)
                    .map(|t| doc(t, "attempt"))
                    .transpose()?,
            })
        })
        .collect()
}

pub(super) struct PgHistory {
    pool: Pool,
}

impl PgHistory {
    pub(super) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Runs a read to completion on the calling (blocking) thread.
    fn block<T>(
        &self,
        read: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::runtime::Handle::current().block_on(read)
    }

    async fn query(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StorageError> {
        let client = client(&self.pool).await?;
        let q = client
            .prepare_cached(sql)
            .await
            .map_err(pg_err("cannot prepare a read"))?;
        client.query(&q, args).await.map_err(pg_err("cannot read"))
    }

    /// Whether `sql` (with `id` as its one parameter) finds a row.
    async fn exists(&self, sql: &str, id: &str) -> Result<bool, StorageError> {
        Ok(!self.query(sql, &[&id]).await?.is_empty())
    }

    /// The span sequence counter of an id.
    async fn sequence_of(&self, rollout_id: &str) -> Result<Option<i64>, StorageError> {
        let rows = self
            .query(
                "SELECT value FROM agl_sequences WHERE rollout_id = $1",
                &[&rollout_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn attempts_of(&self, rollout_id: &str) -> Result<Vec<Attempt>, StorageError> {
        let rows = self
            .query(
                "SELECT doc FROM agl_attempts WHERE rollout_id = $1 ORDER BY sequence_id",
                &[&rollout_id],
            )
            .await?;
        rows.iter().map(|r| doc(r.get(0), "attempt")).collect()
    }

    pub(super) async fn worker(&self, worker_id: &str) -> Result<Option<Worker>, StorageError> {
        let rows = self
            .query(
                "SELECT doc FROM agl_workers WHERE worker_id = $1",
                &[&worker_id],
            )
            .await?;
        rows.first().map(|r| doc(r.get(0), "worker")).transpose()
    }

    /// A setting, as committed (an empty row is a cleared one).
    pub(super) async fn meta(&self, key: &str) -> Result<Option<String>, StorageError> {
        let key = format!("{}{key}", super::tx::META_PREFIX);
        let rows = self
            .query("SELECT value FROM agl_meta WHERE key = $1", &[&key])
            .await?;
        Ok(rows
            .first()
            .map(|r| r.get::<_, String>(0))
            .filter(|v| !v.is_empty()))
    }

    pub(super) async fn latest_resources(&self) -> Result<Option<ResourcesUpdate>, StorageError> {
        let rows = self
            .query(
                "SELECT r.doc FROM agl_meta m JOIN agl_resources r \
                 ON r.resources_id = m.value WHERE m.key = 'latest_resources'",
                &[],
            )
            .await?;
        rows.first().map(|r| doc(r.get(0), "resources")).transpose()
    }

    pub(super) async fn totals(&self) -> Result<Totals, StorageError> {
        let rows = self
            .query(
                "SELECT coalesce(sum(r0), 0)::int8, coalesce(sum(r1), 0)::int8, \
                 coalesce(sum(r2), 0)::int8, coalesce(sum(r3), 0)::int8, \
                 coalesce(sum(r4), 0)::int8, coalesce(sum(r5), 0)::int8, \
                 coalesce(sum(r6), 0)::int8, coalesce(sum(a0), 0)::int8, \
                 coalesce(sum(a1), 0)::int8, coalesce(sum(a2), 0)::int8, \
                 coalesce(sum(a3), 0)::int8, coalesce(sum(a4), 0)::int8, \
                 coalesce(sum(a5), 0)::int8, coalesce(sum(spans), 0)::int8, \
                 coalesce(sum(span_bytes), 0)::int8, coalesce(sum(resources), 0)::int8, \
                 (SELECT count(*) FROM agl_rollouts WHERE queue_pos IS NOT NULL) \
                 FROM agl_counts",
                &[],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError("the totals query returned nothing".into()))?;
        let n = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        let counts = Counts {
            rollouts: std::array::from_fn(n),
            attempts: std::array::from_fn(|i| n(7 + i)),
            spans: n(13),
            span_bytes: n(14),
            resources: n(15),
        };
        let queue = n(16);
        let workers = self
            .query("SELECT doc FROM agl_workers ORDER BY created", &[])
            .await?
            .iter()
            .map(|r| doc(r.get(0), "worker"))
            .collect::<Result<_, _>>()?;
        Ok(Totals {
            counts,
            queue,
            workers,
        })
    }

    async fn spans_of(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
    ) -> Result<Vec<StoredSpan>, StorageError> {
        let rows = self
            .query(
                "SELECT doc FROM agl_spans WHERE rollout_id = $1 \
                 AND ($2::text IS NULL OR attempt_id = $2) ORDER BY id",
                &[&rollout_id, &attempt_id],
            )
            .await?;
        rows.iter().map(|r| span_doc(r.get(0))).collect()
    }
}

impl History for PgHistory {
    fn durable_batches(&self) -> u64 {
        // Every change is committed before it is answered.
        u64::MAX
    }

    fn rollout_exists(&self, rollout_id: &str) -> Result<bool, StorageError> {
        self.block(self.exists(
            "SELECT 1 FROM agl_rollouts WHERE rollout_id = $1",
            rollout_id,
        ))
    }

    fn resources_exist(&self, resources_id: &str) -> Result<bool, StorageError> {
        self.block(self.exists(
            "SELECT 1 FROM agl_resources WHERE resources_id = $1",
            resources_id,
        ))
    }

    fn resources(&self, resources_id: &str) -> Result<Option<ResourcesUpdate>, StorageError> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT doc FROM agl_resources WHERE resources_id = $1",
                    &[&resources_id],
                )
                .await?;
            rows.first().map(|r| doc(r.get(0), "resources")).transpose()
        })
    }

    fn all_resources(&self) -> Result<Vec<ResourcesUpdate>, StorageError> {
        self.block(async {
            let rows = self
                .query("SELECT doc FROM agl_resources ORDER BY created", &[])
                .await?;
            rows.iter().map(|r| doc(r.get(0), "resources")).collect()
        })
    }

    fn rollout_rows(&self, rollout_id: &str) -> Result<Option<RolloutRows>, StorageError> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT doc FROM agl_rollouts WHERE rollout_id = $1",
                    &[&rollout_id],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let rollout: Rollout = doc(row.get(0), "rollout")?;
            let sequence = self.sequence_of(rollout_id).await?;
            Ok(Some(RolloutRows {
                rollout,
                attempts: self.attempts_of(rollout_id).await?,
                spans: self.spans_of(rollout_id, None).await?,
                sequence,
            }))
        })
    }

    fn sequence(&self, rollout_id: &str) -> Result<Option<i64>, StorageError> {
        self.block(self.sequence_of(rollout_id))
    }

    fn rollout_view(&self, rollout_id: &str) -> Result<Option<RolloutView>, StorageError> {
        self.block(async {
            let sql = format!("{ROLLOUT_VIEWS} WHERE r.rollout_id = $1");
            let rows = self.query(&sql, &[&rollout_id]).await?;
            Ok(views(&rows)?.into_iter().next())
        })
    }

    fn attempts(&self, rollout_id: &str) -> Result<Vec<Attempt>, StorageError> {
        self.block(self.attempts_of(rollout_id))
    }

    fn spans(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
    ) -> Result<Vec<StoredSpan>, StorageError> {
        self.block(self.spans_of(rollout_id, attempt_id))
    }

    fn span_texts(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
        descending: bool,
    ) -> Result<Vec<String>, StorageError> {
        // Equal sequence ids keep their arrival order either way, as a stable sort does.
        let sql = if descending {
            "SELECT doc FROM agl_spans WHERE rollout_id = $1 \
             AND ($2::text IS NULL OR attempt_id = $2) ORDER BY sequence_id DESC, id"
        } else {
            "SELECT doc FROM agl_spans WHERE rollout_id = $1 \
             AND ($2::text IS NULL OR attempt_id = $2) ORDER BY sequence_id, id"
        };
        self.block(async {
            let rows = self.query(sql, &[&rollout_id, &attempt_id]).await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn rollouts(&self, filter: RolloutFilter<'_>) -> Result<Vec<RolloutView>, StorageError> {
        let (filter_sql, args) = rollout_filter_sql(filter);
        let sql = format!("{ROLLOUT_VIEWS} {filter_sql} ORDER BY r.created");
        self.block(async {
            let rows = self.query(&sql, &params(&args)).await?;
            views(&rows)
        })
    }

    fn rollouts_window(
        &self,
        filter: RolloutFilter<'_>,
        order: RolloutOrder,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RolloutView>, usize), StorageError> {
        let (filter_sql, args) = rollout_filter_sql(filter);
        let n = args.len();
        let order_sql = sql::rollout_order::<Postgres>(order);
        // The count and the page from one snapshot: one statement. The page's ids come
        // from the indexes; only its rows' documents are read.
        let sql = format!(
            "SELECT r.doc, (SELECT a.doc FROM agl_attempts a WHERE a.rollout_id = r.rollout_id \
             ORDER BY a.sequence_id DESC LIMIT 1), \
             (SELECT count(*) FROM agl_rollouts r {filter_sql}) \
             FROM (SELECT r.rollout_id FROM agl_rollouts r {filter_sql} ORDER BY {order_sql} \
             LIMIT ${} OFFSET ${}) p \
             JOIN agl_rollouts r ON r.rollout_id = p.rollout_id ORDER BY {order_sql}",
            n + 1,
            n + 2
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.block(async {
            let mut all = params(&args);
            all.push(&limit);
            all.push(&offset);
            let rows = self.query(&sql, &all).await?;
            let total = match rows.first() {
                Some(row) => usize::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                // An empty page says nothing of the count: ask it.
                None => {
                    let count = format!("SELECT count(*) FROM agl_rollouts r {filter_sql}");
                    let rows = self.query(&count, &params(&args)).await?;
                    rows.first()
                        .map_or(0, |r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0))
                }
            };
            Ok((views(&rows)?, total))
        })
    }
}
