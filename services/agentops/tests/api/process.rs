//! The built binary: `--print-env`, port 0 with the address on stdout, the drain period
//! after SIGTERM, and `--daemon` with its pid file.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{client, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_agl-agentops");

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agl-agentops-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills a daemon left behind by a failed test.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal(self.0, "-KILL");
    }
}

/// The value of `export NAME=` in an environment block.
fn exported(block: &str, name: &str) -> Option<String> {
    block
        .lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .map(str::to_owned)
}

#[test]
fn print_env_prints_the_block_and_exits() {
    let out = Command::new(BIN)
        .args(["--print-env", "--port", "9123"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        exported(&stdout, "AGENTOPS_EXPORTER_ENDPOINT").as_deref(),
        Some("http://127.0.0.1:9123/v1/traces")
    );
    assert_eq!(
        exported(&stdout, "AGENTOPS_API_KEY").as_deref(),
        Some("00000000-0000-0000-0000-000000000000")
    );
    assert!(exported(&stdout, "AGENTOPS_APP_URL").is_some());
    assert_eq!(
        exported(&stdout, "NO_PROXY").as_deref(),
        Some("127.0.0.1,localhost")
    );
}

#[test]
fn help_follows_the_reference() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.starts_with("Start AgentOps server"), "{help}");
    assert!(help.contains("Run server as a daemon"));
    assert!(help.contains("Port to run the server on (default: 8002)"));
}

#[tokio::test]
async fn sigterm_keeps_serving_for_the_drain_period_then_exits_cleanly() {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--drain-seconds", "2", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let stdout = child.stdout.take().unwrap();
    // The first stdout line names the bound address; then comes the environment block.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(line);
            if lines.len() == 7 {
                let _ = tx.send(lines.join("\n"));
            }
        }
    });
    let announced = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        announced.starts_with("# agl-agentops listening on 127.0.0.1:"),
        "{announced}"
    );
    let base = exported(&announced, "AGENTOPS_API_ENDPOINT").unwrap();
    let http = client();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    assert!(signal(child.id(), "-TERM"));
    eventually(Duration::from_secs(5), "readyz draining", || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    // Still serving: a late exporter flush and log upload are taken.
    let r = http
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v4/logs/upload/"))
        .json(&serde_json::json!({"body": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

fn wait_gone(pid: u32, pid_file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while signal(pid, "-0") || pid_file.exists() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn daemon_starts_reports_healthy_and_stops_by_its_pid_file() {
    let dir = scratch_dir();
    let pid_file = dir.join("agentops.pid");
    let log_file = dir.join("agentops.log");
    let out = Command::new(BIN)
        .args(["--daemon", "--port", "0", "--drain-seconds", "0"])
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(pid);
    assert!(
        stderr.contains(&format!("running as pid {pid}")),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let base = exported(&stdout, "AGENTOPS_API_ENDPOINT").unwrap();
    let health = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A second daemon on the same pid file is refused.
    let again = Command::new(BIN)
        .args(["--daemon", "--port", "0"])
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log_file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    assert!(signal(pid, "-TERM"));
    wait_gone(pid, &pid_file);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("agentops endpoint stopped"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn daemon_start_failure_exits_non_zero_with_the_log_tail() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = scratch_dir();
    let out = Command::new(BIN)
        .args(["--daemon", "--port", &port])
        .arg("--pid-file")
        .arg(dir.join("pid"))
        .arg("--log-file")
        .arg(dir.join("log"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(!dir.join("pid").exists());
    let _ = std::fs::remove_dir_all(dir);
}
