//! `agl-bench startup`: time from exec to the first healthy answer, and idle memory.
//! The health route is polled every millisecond; a shell loop with `curl` could not
//! resolve a start-up of a few milliseconds.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use std::time::{Duration, Instant};

use crate::driver::Http;
use crate::procstat;
use crate::results::{Machine, StartupResult, unix_now};

/// Everything `startup` needs.
#[derive(Debug, Clone)]
pub struct StartupConfig {
    /// Name of the server in the results.
    pub label: String,
    /// Port the command will listen on (loopback).
    pub port: u16,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Starts to time.
    pub repeat: usize,
    /// Give up on one start after this long.
    pub limit: Duration,
    /// A file the command creates, removed (with its SQLite companions) before every
    /// start and after the last, so that each start begins without it.
    pub fresh_file: Option<PathBuf>,
}

/// Removes `file` and its SQLite companions (`-wal`, `-shm`, `-journal`), if present.
fn remove_store_file(file: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Starts the command `repeat` times, timing each start and reading idle memory.
pub async fn startup(cfg: &StartupConfig) -> anyhow::Result<StartupResult> {
    let (program, args) = cfg
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command to start"))?;
    let http = Http::new(&format!("http://127.0.0.1:{}", cfg.port))?;
    anyhow::ensure!(
        http.get("/v1/agl/health").await.is_err(),
        "something already answers on port {}",
        cfg.port
    );
    let started_unix = unix_now();
    let mut runs_ms = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..cfg.repeat.max(1) {
        if let Some(f) = &cfg.fresh_file {
            remove_store_file(f)?;
        }
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        loop {
            if http.get("/v1/agl/health").await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{program} exited with {status} before it became healthy");
            }
            anyhow::ensure!(
                t0.elapsed() < cfg.limit,
                "{program} was not healthy after {:?}",
                cfg.limit
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        runs_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(procstat::rss_kb(pid).unwrap_or(0) as f64);
        child.kill().await?;
        // The next start must not find this one still answering.
        while http.get("/v1/agl/health").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if let Some(f) = &cfg.fresh_file {
        remove_store_file(f)?;
    }
    let median_ms = median(&mut runs_ms.clone());
    Ok(StartupResult {
        label: cfg.label.clone(),
        command: cfg.command.clone(),
        runs_ms,
        median_ms,
        idle_rss_kb: median(&mut rss) as u64,
        fresh_file: cfg.fresh_file.as_ref().map(|f| f.display().to_string()),
        started_unix,
        machine: Machine::current(),
    })
}
