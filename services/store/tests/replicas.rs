//! Several `agl-store` processes on one Postgres database: none holds state of its own, so
//! whatever one does the others see, and no two hand out the same work. Each test starts
//! its own Postgres (`scripts/pg.sh`); without one on the machine they say so and pass,
//! unless `AGL_REQUIRE_PG=1` (the test command sets it) makes that a failure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

mod process;

use process::{Pg, Server, command};

/// Replicas on a database of their own Postgres, and a client for them.
struct Cluster {
    // Declared first, so dropped first: the replicas stop before their database.
    servers: Vec<Server>,
    /// The replicas' `/v1/agl` base URLs, in order.
    bases: Vec<String>,
    client: reqwest::Client,
    _pg: Pg,
}

/// `n` replicas, with the watchdog's debounce given, on a new Postgres named `name`; `None`
/// when this machine has no Postgres (see [`Pg::start`]).
fn cluster(name: &str, n: usize, debounce: &str) -> Option<Cluster> {
    let pg = Pg::start(name)?;
    let storage = format!("--storage={}", pg.database(name));
    let servers: Vec<Server> = (0..n)
        .map(|_| Server::start(command(&["--scan-debounce-seconds", debounce, &storage])))
        .collect();
    Some(Cluster {
        bases: servers
            .iter()
            .map(|s| format!("{}/v1/agl", s.base))
            .collect(),
        servers,
        client: agl_common::tls::http_client().build().unwrap(),
        _pg: pg,
    })
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client.post(&url).json(&body).send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

fn id(v: &Value) -> String {
    v["rollout_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_spread_over_replicas_get_every_rollout_exactly_once() {
    // Kept to the end: dropping it stops the replicas and their database.
    let Some(cluster) = cluster("claims", 3, "10") else {
        return;
    };
    let (bases, client) = (cluster.bases.clone(), cluster.client.clone());
    let bases = Arc::new(bases);

    const ROLLOUTS: usize = 1024;
    const RUNNERS: usize = 256;
    let mut enqueued = HashSet::new();
    for batch in 0..ROLLOUTS / 64 {
        let items: Vec<Value> = (0..64)
            .map(|i| json!({"input": {"b": batch, "i": i}}))
            .collect();
        // Enqueued through every replica in turn: one queue for all of them.
        let url = format!("{}/queues/rollouts/enqueue", bases[batch % bases.len()]);
        for r in post(&client, url, json!({"rollouts": items}))
            .await
            .as_array()
            .unwrap()
        {
            enqueued.insert(id(r));
        }
    }
    assert_eq!(enqueued.len(), ROLLOUTS);

    let claims: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let claimed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let tasks: Vec<_> = (0..RUNNERS)
        .map(|w| {
            let (client, bases, claims, claimed) = (
                client.clone(),
                Arc::clone(&bases),
                Arc::clone(&claims),
                Arc::clone(&claimed),
            );
            tokio::spawn(async move {
                let url = format!("{}/queues/rollouts/dequeue", bases[w % bases.len()]);
                while claimed.load(Ordering::SeqCst) < ROLLOUTS {
                    assert!(Instant::now() < deadline, "runners did not drain the queue");
                    let got = post(
                        &client,
                        url.clone(),
                        json!({"limit": 1, "worker_id": format!("w{w}")}),
                    )
                    .await;
                    let Some(r) = got.as_array().unwrap().first() else {
                        // Claimed by others meanwhile, or held by a claim in flight.
                        tokio::task::yield_now().await;
                        continue;
                    };
                    claimed.fetch_add(1, Ordering::SeqCst);
                    claims.lock().push((
                        id(r),
                        r["attempt"]["attempt_id"].as_str().unwrap().to_owned(),
                        r["attempt"]["sequence_id"].as_i64().unwrap(),
                    ));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let claims = claims.lock().clone();
    let mut seen = HashSet::new();
    for (rid, _, seq) in &claims {
        assert!(seen.insert(rid.clone()), "{rid} was handed out twice");
        assert_eq!(*seq, 1, "{rid}: one attempt each");
    }
    assert_eq!(seen, enqueued, "every rollout was handed out");
    // Each replica agrees: nothing queued, every rollout preparing with its one attempt.
    for base in bases.iter() {
        let stats = client
            .get(format!("{base}/statistics"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(stats["backend"], "postgres");
        assert_eq!(stats["queue_length"], 0);
        assert_eq!(stats["total_rollouts"], ROLLOUTS);
        assert_eq!(stats["total_attempts"], ROLLOUTS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_one_replica_is_woken_by_a_finish_on_another() {
    // Kept to the end: dropping it stops the replicas and their database.
    let Some(cluster) = cluster("waits", 2, "10") else {
        return;
    };
    let (servers, bases, client) = (&cluster.servers, &cluster.bases, cluster.client.clone());
    let (a, b) = (bases[0].clone(), bases[1].clone());
    let queued = post(
        &client,
        format!("{a}/queues/rollouts/enqueue"),
        json!({"rollouts": [{"input": 1}, {"input": 2}]}),
    )
    .await;
    let ids: Vec<String> = queued.as_array().unwrap().iter().map(id).collect();
    let claimed = post(
        &client,
        format!("{b}/queues/rollouts/dequeue"),
        json!({"limit": 2}),
    )
    .await;
    let attempts: HashMap<String, String> = claimed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                id(r),
                r["attempt"]["attempt_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    // B waits for both (long timeout); A finishes them one after the other.
    let waiter = {
        let (client, b, ids) = (client.clone(), b.clone(), ids.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let done = post(
                &client,
                format!("{b}/waits/rollouts"),
                json!({"rollout_ids": ids, "timeout": 60}),
            )
            .await;
            (done, started.elapsed())
        })
    };
    // Readiness, not a sleep: B reports the waiting call before anything finishes.
    let metrics = format!("{}/metrics", servers[1].base);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = client
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("agl_store_waiting_calls 1") {
            break;
        }
        assert!(Instant::now() < until, "the wait never started on B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for rid in &ids {
        post(
            &client,
            format!("{a}/rollouts/{rid}/attempts/{}", attempts[rid]),
            json!({"status": "succeeded"}),
        )
        .await;
    }
    let (done, waited) = waiter.await.unwrap();
    let finished: Vec<String> = done.as_array().unwrap().iter().map(id).collect();
    assert_eq!(finished, ids, "B answers with both, in the order asked");
    assert!(
        done.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded"),
        "{done}"
    );
    eprintln!("the wait on B returned {waited:?} after it began (timeout 60 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_ids_issued_by_several_replicas_are_unique_and_dense() {
    // Kept to the end: dropping it stops the replicas and their database.
    let Some(cluster) = cluster("seq", 2, "10") else {
        return;
    };
    let (bases, client) = (cluster.bases.clone(), cluster.client.clone());
    // Ids are issued for rollouts that do not exist too: the counter row is created once.
    const ISSUES: usize = 400;
    let tasks: Vec<_> = (0..ISSUES)
        .map(|i| {
            let (client, url) = (
                client.clone(),
                format!("{}/spans/next", bases[i % bases.len()]),
            );
            tokio::spawn(async move {
                post(
                    &client,
                    url,
                    json!({"rollout_id": "ro-shared", "attempt_id": "at-x"}),
                )
                .await["sequence_id"]
                    .as_i64()
                    .unwrap()
            })
        })
        .collect();
    let mut issued = Vec::new();
    for t in tasks {
        issued.push(t.await.unwrap());
    }
    issued.sort_unstable();
    let expected: Vec<i64> = (1..=ISSUES as i64).collect();
    assert_eq!(issued, expected, "each id once, none skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_of_any_replica_times_out_an_attempt_once() {
    // Each replica scans at most once a second, and only one of them per second.
    // Kept to the end: dropping it stops the replicas and their database.
    let Some(cluster) = cluster("watch", 2, "1") else {
        return;
    };
    let (bases, client) = (cluster.bases.clone(), cluster.client.clone());
    let config = json!({"timeout_seconds": 1, "max_attempts": 3, "retry_condition": ["timeout"]});
    let queued = post(
        &client,
        format!("{}/queues/rollouts/enqueue", bases[0]),
        json!({"rollouts": [{"input": 1, "config": config}]}),
    )
    .await;
    let rid = id(&queued[0]);
    post(
        &client,
        format!("{}/queues/rollouts/dequeue", bases[1]),
        json!({"limit": 1, "worker_id": "w"}),
    )
    .await;
    // Nobody calls: the replicas' own tickers find the timeout.
    let until = Instant::now() + Duration::from_secs(30);
    let rollout = loop {
        let r = client
            .get(format!("{}/rollouts/{rid}", bases[0]))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        if r["status"] == "requeuing" {
            break r;
        }
        assert!(
            Instant::now() < until,
            "no replica timed the attempt out: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rollout["attempt"]["status"], "timeout");
    // Requeued once: one queue entry, found by a claim on either replica.
    let again = post(
        &client,
        format!("{}/queues/rollouts/dequeue", bases[0]),
        json!({"limit": 5}),
    )
    .await;
    assert_eq!(again.as_array().unwrap().len(), 1);
    assert_eq!(again[0]["attempt"]["sequence_id"], 2);
    let worker = client
        .get(format!("{}/workers/w", bases[1]))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(worker["status"], "unknown", "{worker}");
}
