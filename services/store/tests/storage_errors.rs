//! What the SQLite backend does with files it cannot use: a clear error at start, or a 5xx
//! JSON error at run time, and never a corrupted store.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

mod process;

use process::Server;

fn command(db: &Path) -> Command {
    process::command(&[&format!("--storage=sqlite:{}", db.display())])
}

/// Starts a server that is expected to come up; returns it and its `/v1/agl` base URL.
fn start(db: &Path) -> (Server, String) {
    let server = Server::start(command(db));
    let base = format!("{}/v1/agl", server.base);
    (server, base)
}

/// Runs a server that is expected to refuse to start; returns its stderr.
fn refuses(db: &Path) -> String {
    let out = command(db).output().unwrap();
    assert!(
        !out.status.success(),
        "the server started on {}",
        db.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agl-storage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unusable_paths_fail_at_start_with_the_reason() {
    let err = refuses(Path::new("/nonexistent-dir/agl.db"));
    assert!(
        err.contains("directory /nonexistent-dir does not exist"),
        "{err}"
    );
    let err = refuses(Path::new("/proc/agl.db"));
    assert!(err.contains("cannot"), "{err}");

    let dir = temp("garbage");
    let garbage = dir.join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    let err = refuses(&garbage);
    assert!(err.contains("not an SQLite database"), "{err}");
    let before = std::fs::read(&garbage).unwrap();
    assert_eq!(before, vec![b'x'; 8192], "a refused file is left untouched");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_corrupted_store_file_is_refused_not_served() {
    let dir = temp("corrupt");
    let db = dir.join("store.db");
    let (mut child, base) = start(&db);
    let client = agl_common::tls::http_client().build().unwrap();
    let items: Vec<Value> = (0..400)
        .map(|i| json!({"input": "x".repeat(200) + &i.to_string()}))
        .collect();
    let r = client
        .post(format!("{base}/queues/rollouts/enqueue"))
        .json(&json!({"rollouts": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    child.sigterm();
    assert!(child.wait_exit().success(), "clean exit after SIGTERM");

    // Scribble over pages in the middle of the file.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 16 * 1024, "the store file holds the data");
    for b in &mut bytes[8192..16384] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = refuses(&db);
    assert!(
        err.contains("corrupted")
            || err.contains("not a usable agl-store database")
            || err.contains("malformed"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_file_in_use_by_another_server_is_refused() {
    let dir = temp("locked");
    let db = dir.join("store.db");
    let (first, _) = start(&db);
    let err = refuses(&db);
    assert!(err.contains("locked by another process"), "{err}");
    // An offline backup of a file a server holds fails at once instead of waiting.
    let copy = dir.join("copy.db");
    let out = Command::new(env!("CARGO_BIN_EXE_agl-store"))
        .args(["backup", "--from"])
        .arg(&db)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another process"), "{err}");
    first.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_full_disk_gives_503_and_keeps_every_acknowledged_write() {
    let dir = temp("full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=768k", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("AGL_REQUIRE_TMPFS").is_err(),
            "cannot mount a tmpfs for the full-disk test"
        );
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let db = dir.join("store.db");
    let (child, base) = start(&db);
    let client = agl_common::tls::http_client().build().unwrap();
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..2000 {
        let r = client
            .post(format!("{base}/queues/rollouts/enqueue"))
            .json(&json!({"rollouts": [{"input": format!("{i}:{}", "y".repeat(2000))}]}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == 201 {
            acked.push(body[0]["rollout_id"].as_str().unwrap().to_owned());
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, body) = refusal.expect("the disk filled up");
    assert_eq!(status, 503);
    assert_eq!(body["error_type"], "StorageError");
    assert!(
        body["detail"].as_str().unwrap().contains("storage error"),
        "{body}"
    );
    // Later writes are refused too (memory may be ahead of the disk), reads still work.
    let r = client
        .post(format!("{base}/queues/rollouts/enqueue"))
        .json(&json!({"rollouts": [{"input": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    child.kill9();

    // Restarted on the same (still full) disk: the file is intact and holds every acked write.
    let (child, base) = start(&db);
    let page: Value = client
        .post(format!("{base}/rollouts/search"))
        .json(&json!({"rollout_id_in": acked}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"].as_u64().unwrap() as usize, acked.len());
    assert!(acked.len() > 10, "some writes fit before the disk filled");
    child.kill9();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
}
