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
