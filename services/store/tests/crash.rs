//! Crash safety of the durable backends: a training loop runs against the real binary while
//! it is killed with SIGKILL at random points and restarted. Every write the server
//! acknowledged must be there afterwards, nothing may be duplicated, no sequence id may be
//! issued twice, and the loop must then complete.
//!
//! * SQLite: one server restarted on the same file. It keeps no finished rollout in memory
//!   (`--cache-mib 0`): each leaves memory as soon as it is durable, so the checks also hold
//!   for what is read back from the file.
//! * Postgres: two replicas on one database, the clients spread over both; one replica at a
//!   time is killed and restarted while the other serves on, and once Postgres itself is
//!   stopped as a crash would stop it and started again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

mod process;

use process::{Pg, Server, command};

/// Starts a server on `storage`; returns it and its `/v1/agl` base URL.
fn start(storage: &str) -> (Server, String) {
    let storage = format!("--storage={storage}");
    let server = Server::start(command(&[
        "--scan-debounce-seconds",
        "0",
        "--cache-mib",
        "0",
        &storage,
    ]));
    let base = format!("{}/v1/agl", server.base);
    (server, base)
}

/// The servers under test and what a crash does to them.
struct Cluster {
    storage: String,
    servers: Vec<Server>,
    pg: Option<Pg>,
    crashes: usize,
}

impl Cluster {
    fn new(storage: String, replicas: usize, pg: Option<Pg>) -> (Self, Vec<String>) {
        let (servers, bases) = (0..replicas).map(|_| start(&storage)).unzip();
        let cluster = Self {
            storage,
            servers,
            pg,
            crashes: 0,
        };
        (cluster, bases)
    }

    /// One crash: a server killed with SIGKILL and started again (replica by replica in
    /// turn); with Postgres, the second crash is the database's instead. Returns the
    /// servers' base URLs afterwards.
    fn crash(&mut self) -> Vec<String> {
        self.crashes += 1;
        if let Some(pg) = &self.pg
            && self.crashes == 2
        {
            pg.crash();
            std::thread::sleep(Duration::from_millis(300));
            pg.restart();
        } else {
            // Killed before its successor starts: an SQLite file takes one server at a time.
            let i = self.crashes % self.servers.len();
            self.servers.remove(i).kill9();
            let (server, _) = start(&self.storage);
            self.servers.insert(i, server);
        }
        self.servers
            .iter()
            .map(|s| format!("{}/v1/agl", s.base))
            .collect()
    }
}

/// The base URLs clients pick from, in turn.
struct Bases {
    urls: RwLock<Vec<String>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Bases {
    fn pick(&self) -> String {
        let urls = self.urls.read();
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        urls[i % urls.len()].clone()
    }
}

/// What the server acknowledged, as the clients saw it.
#[derive(Default)]
struct Acked {
    rollouts: HashSet<String>,
    claims: Vec<(String, String, i64)>,
    spans: HashSet<(String, String, String)>,
    sequence_ids: HashMap<String, Vec<i64>>,
    succeeded: HashSet<(String, String)>,
}

/// A tiny deterministic generator, so a failing seed can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

async fn post(client: &reqwest::Client, base: &Bases, path: &str, body: Value) -> Option<Value> {
    let url = format!("{}{path}", base.pick());
    let r = match client.post(&url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("POST {url}: {e}");
            return None;
        }
    };
    if !r.status().is_success() {
        eprintln!(
            "POST {url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        return None;
    }
    r.json().await.ok()
}

async fn runner(
    worker: String,
    client: reqwest::Client,
    base: Arc<Bases>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Some(claimed) = post(
            &client,
            &base,
            "/queues/rollouts/dequeue",
            json!({"limit": 1, "worker_id": worker}),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(r) = claimed.as_array().and_then(|a| a.first()).cloned() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let rid = r["rollout_id"].as_str().unwrap().to_owned();
        let aid = r["attempt"]["attempt_id"].as_str().unwrap().to_owned();
        let seq = r["attempt"]["sequence_id"].as_i64().unwrap();
        acked.lock().claims.push((rid.clone(), aid.clone(), seq));
        let mut complete = true;
        for _ in 0..3 {
            let Some(next) = post(
                &client,
                &base,
                "/spans/next",
                json!({"rollout_id": rid, "attempt_id": aid}),
            )
            .await
            else {
                complete = false;
                break;
            };
            let sid = next["sequence_id"].as_i64().unwrap();
            acked
                .lock()
                .sequence_ids
                .entry(rid.clone())
                .or_default()
                .push(sid);
            n += 1;
            let span_id = format!("{n:016x}");
            let span = json!({
                "rollout_id": rid, "attempt_id": aid, "sequence_id": sid,
                "trace_id": format!("{:032x}", n), "span_id": span_id, "parent_id": null,
                "name": "step", "status": {"status_code": "OK"}, "attributes": {"worker": worker},
                "events": [], "links": [], "start_time": 1.0, "end_time": 2.0,
                "context": null, "parent": null, "resource": {"attributes": {}, "schema_url": ""}
            });
            if post(&client, &base, "/spans", span).await.is_none() {
                complete = false;
                break;
            }
            acked
                .lock()
                .spans
                .insert((rid.clone(), aid.clone(), span_id));
        }
        if complete
            && post(
                &client,
                &base,
                &format!("/rollouts/{rid}/attempts/{aid}"),
                json!({"status": "succeeded"}),
            )
            .await
            .is_some()
        {
            acked.lock().succeeded.insert((rid, aid));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("agl-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let storage = format!("sqlite:{}", dir.join("store.db").display());
    let (cluster, bases) = Cluster::new(storage, 1, None);
    training_loop_survives_crashes(cluster, bases).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_a_replica_and_of_postgres() {
    let Some(pg) = Pg::start("crash") else {
        return;
    };
    let storage = pg.database("crash");
    let (cluster, bases) = Cluster::new(storage, 2, Some(pg));
    training_loop_survives_crashes(cluster, bases).await;
}

async fn training_loop_survives_crashes(mut cluster: Cluster, bases: Vec<String>) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Lcg(seed);

    let base = Arc::new(Bases {
        urls: RwLock::new(bases),
        next: Default::default(),
    });
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = agl_common::tls::http_client()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // The algorithm: enqueues batches; attempts left behind by a crash time out and retry.
    let algorithm = {
        let (client, base, acked, stop) = (
            client.clone(),
            Arc::clone(&base),
            Arc::clone(&acked),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut batches = 0;
            while batches < 12 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let items: Vec<Value> = (0..8)
                    .map(|i| json!({"input": {"batch": batches, "i": i},
                                    "config": {"timeout_seconds": 2, "max_attempts": 100, "retry_condition": ["timeout"]}}))
                    .collect();
                match post(
                    &client,
                    &base,
                    "/queues/rollouts/enqueue",
                    json!({"rollouts": items}),
                )
                .await
                {
                    Some(list) => {
                        let mut a = acked.lock();
                        for r in list.as_array().unwrap() {
                            a.rollouts
                                .insert(r["rollout_id"].as_str().unwrap().to_owned());
                        }
                        batches += 1;
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let runners: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(runner(
                format!("w{w}"),
                client.clone(),
                Arc::clone(&base),
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();

    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150 + rng.next(350))).await;
        let bases = cluster.crash();
        *base.urls.write() = bases;
    }
    algorithm.await.unwrap();

    // Let the loop finish: every acknowledged rollout must end up succeeded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids: Vec<String> = acked.lock().rollouts.iter().cloned().collect();
    assert!(ids.len() >= 8, "the algorithm got batches through");
    loop {
        let page = post(
            &client,
            &base,
            "/rollouts/search",
            json!({"rollout_id_in": ids}),
        )
        .await
        .unwrap();
        let done = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .count();
        assert_eq!(
            page["total"].as_u64().unwrap() as usize,
            ids.len(),
            "every acknowledged rollout exists"
        );
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "loop did not complete: {done}/{} succeeded",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in runners {
        r.await.unwrap();
    }

    // The clients are done: take what they recorded out of the lock.
    let acked = std::mem::take(&mut *acked.lock());
    // Claims: each acknowledged claim is a distinct attempt; attempts of a rollout are 1..n.
    let mut claimed = HashSet::new();
    for (rid, aid, _) in &acked.claims {
        assert!(
            claimed.insert((rid.clone(), aid.clone())),
            "attempt {aid} handed out twice"
        );
    }
    let mut all_spans = 0;
    for rid in acked
        .rollouts
        .iter()
        .chain(acked.claims.iter().map(|c| &c.0))
        .collect::<HashSet<_>>()
    {
        let attempts = post(
            &client,
            &base,
            &format!("/rollouts/{rid}/attempts/search"),
            json!({}),
        )
        .await
        .unwrap();
        let seqs: Vec<i64> = attempts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["sequence_id"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "attempts of {rid} are numbered without gaps or repeats"
        );
        for (crid, aid, seq) in acked.claims.iter().filter(|c| &c.0 == rid) {
            let a = attempts["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["attempt_id"] == aid.as_str());
            assert!(
                a.is_some_and(|a| a["sequence_id"] == *seq),
                "claimed attempt {aid} of {crid} survived"
            );
        }
        let spans = post(&client, &base, "/spans/search", json!({"rollout_id": rid}))
            .await
            .unwrap();
        let mut keys = HashSet::new();
        let mut seq_ids = HashSet::new();
        for s in spans["items"].as_array().unwrap() {
            let key = (
                s["attempt_id"].as_str().unwrap().to_owned(),
                s["span_id"].as_str().unwrap().to_owned(),
            );
            assert!(keys.insert(key), "duplicate span in {rid}");
            seq_ids.insert(s["sequence_id"].as_i64().unwrap());
            all_spans += 1;
        }
        // Issued sequence ids of a rollout are never issued twice, across restarts.
        if let Some(issued) = acked.sequence_ids.get(rid.as_str()) {
            let unique: HashSet<_> = issued.iter().collect();
            assert_eq!(
                unique.len(),
                issued.len(),
                "sequence id reissued in {rid}: {issued:?}"
            );
        }
    }
    for (rid, aid, span_id) in &acked.spans {
        let found = post(
            &client,
            &base,
            "/spans/search",
            json!({"rollout_id": rid, "attempt_id": aid, "span_id": span_id}),
        )
        .await
        .unwrap();
        assert_eq!(
            found["total"], 1,
            "acknowledged span {span_id} of {rid} is there once"
        );
    }
    for (rid, aid) in &acked.succeeded {
        let attempts = post(
            &client,
            &base,
            &format!("/rollouts/{rid}/attempts/search"),
            json!({}),
        )
        .await
        .unwrap();
        let a = attempts["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attempt_id"] == aid.as_str())
            .unwrap();
        assert_eq!(
            a["status"], "succeeded",
            "acknowledged success of {aid} kept"
        );
    }
    assert!(all_spans >= acked.spans.len());
    eprintln!(
        "acknowledged: {} rollouts, {} claims, {} spans, {} successes; {} spans stored",
        acked.rollouts.len(),
        acked.claims.len(),
        acked.spans.len(),
        acked.succeeded.len(),
        all_spans
    );
    drop(cluster);
}
