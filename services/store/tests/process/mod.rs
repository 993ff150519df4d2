//! The real `agl-store` binary as a child process, for tests that need a process of their
//! own (signals, crashes, global telemetry, files held open).

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// The command line every test starts from: loopback, port 0, JSON logs, no exporter.
pub fn command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agl-store"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "json"])
        .args(extra)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("AGL_STORAGE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Server {
    /// Starts `cmd` and waits until the server logs the address it listens on.
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("agl-store starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = v.get("addr").and_then(Value::as_str)
                {
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("agl-store logs its address");
        Self {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (at most 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agl-store did not exit within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Postgres server (`scripts/pg.sh`) in a directory of its own; stopped and
/// removed when dropped.
pub struct Pg {
    pub dir: std::path::PathBuf,
    /// The libpq connection string of its `postgres` database.
    pub url: String,
}

/// What `scripts/pg.sh` says when no Postgres can be found or installed.
const NO_POSTGRES: i32 = 3;

impl Pg {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh")
    }

    /// Starts a fresh server; `None` (with a message) when this machine has no Postgres,
    /// unless `AGL_REQUIRE_PG=1`, which makes that a failure.
    pub fn start(name: &str) -> Option<Self> {
        // Short: the socket path must stay under 108 bytes.
        let dir = std::path::PathBuf::from(format!("/tmp/aglpg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(Self::script())
            .args(["start", dir.to_str().expect("utf-8 path")])
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        if out.status.code() == Some(NO_POSTGRES)
            && std::env::var("AGL_REQUIRE_PG").as_deref() != Ok("1")
        {
            eprintln!(
                "skipped: no Postgres on this machine (scripts/pg.sh installs Debian's postgresql-15 as root)"
            );
            return None;
        }
        assert!(out.status.success(), "scripts/pg.sh start failed");
        let url = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        Some(Self { dir, url })
    }

    /// A new empty database; its connection string.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args([&self.url, "-q", "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{} dbname={name}", self.url)
    }

    fn run(&self, what: &str) {
        let status = Command::new("bash")
            .arg(Self::script())
            .args([what, self.dir.to_str().expect("utf-8 path")])
            .stdout(Stdio::null())
            .status()
            .expect("bash runs");
        assert!(status.success(), "scripts/pg.sh {what} failed");
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint).
    pub fn crash(&self) {
        self.run("kill");
    }

    /// Starts it again on the same data.
    pub fn restart(&self) {
        self.run("start");
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .args(["kill", self.dir.to_str().unwrap_or("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
