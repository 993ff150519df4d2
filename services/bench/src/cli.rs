//! Command-line interface of `agl-bench`: one subcommand per measurement, each writing a
//! JSON result file that `report` renders.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::dashboard::{self, Backend, DashboardConfig};
use crate::grow::{self, GrowConfig};
use crate::report::{self, ReportOptions};
use crate::results::ResultFile;
use crate::scenario::{self, RunConfig, Scenario, Sizes};
use crate::startup::{self, StartupConfig};

/// Load generator for LightningStore servers.
#[derive(Debug, Parser)]
#[command(name = "agl-bench", version, about)]
pub struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a server's hot paths at a fixed concurrency for a fixed time.
    Run(RunArgs),
    /// Serve the write ceiling: parse each body and append it to a vector.
    Ceiling(CeilingArgs),
    /// Fill a server with spans and measure memory and span throughput at each size.
    Grow(GrowArgs),
    /// Time a server command from exec to healthy, and read its idle memory.
    Startup(StartupArgs),
    /// Render docs/benchmarks.md from result files (to stdout).
    Report(ReportArgs),
    /// Start agl-store on each backend, fill it to training-run size and time every
    /// dashboard page (and the JSON API for the same data).
    Dashboard(DashboardArgs),
}

/// `agl-bench run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Base URL of the server, or of several replicas of one store separated by commas
    /// (each client keeps to one of them, in turn); loopback addresses only.
    #[arg(long)]
    pub target: String,
    /// Name of the server in the results (agl-store, python, ceiling).
    #[arg(long, default_value = "agl-store")]
    pub label: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds before each scenario's measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Scenario to run (repeatable); all of them when absent.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// The model server's OpenAI base URL (loopback), for the v1 proxy scenarios: it is
    /// registered with the server under test and called directly for comparison.
    #[arg(long)]
    pub model_url: Option<String>,
    /// Server process to sample for memory and CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Tiny bodies and fills (a quick check that every path works).
    #[arg(long)]
    pub tiny: bool,
}

/// `agl-bench ceiling`.
#[derive(Debug, clap::Args)]
pub struct CeilingArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
}

/// `agl-bench grow`.
#[derive(Debug, clap::Args)]
pub struct GrowArgs {
    /// Base URL of the server; loopback addresses only.
    #[arg(long)]
    pub target: String,
    /// Name of the server in the results.
    #[arg(long, default_value = "agl-store")]
    pub label: String,
    /// Server process to read memory from.
    #[arg(long)]
    pub server_pid: u32,
    /// Store sizes in spans, ascending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000"
    )]
    pub sizes: Vec<u64>,
    /// Rollouts to enqueue for the memory-per-rollout figure.
    #[arg(long, default_value_t = 100_000)]
    pub rollouts: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured seconds of each span add and span query run.
    #[arg(long, default_value_t = 2.0)]
    pub step_duration: f64,
    /// The server's SQLite file: its size (with its -wal) is recorded at every size.
    #[arg(long)]
    pub disk_file: Option<PathBuf>,
    /// Mark each filled rollout succeeded once its spans are in, as a training run does:
    /// the store then grows in history, and the span queries read finished rollouts.
    #[arg(long)]
    pub finish: bool,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `agl-bench startup`.
#[derive(Debug, clap::Args)]
pub struct StartupArgs {
    /// Name of the server in the results.
    #[arg(long, default_value = "agl-store")]
    pub label: String,
    /// Port the command listens on (127.0.0.1).
    #[arg(long)]
    pub port: u16,
    /// Starts to time.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// A file the command creates (an SQLite store): removed, with its -wal, -shm and
    /// -journal, before every start and after the last, so each start creates it anew.
    #[arg(long)]
    pub fresh_file: Option<PathBuf>,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `agl-bench report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The command that produced the results, quoted in the report.
    #[arg(long, default_value = "./scripts/bench.sh")]
    pub command: String,
    /// Label of the server under test.
    #[arg(long, default_value = "agl-store")]
    pub ours: String,
    /// Label of the official Python server.
    #[arg(long, default_value = "python")]
    pub baseline: String,
    /// Label of the write ceiling.
    #[arg(long, default_value = "ceiling")]
    pub ceiling: String,
    /// Label of the server under test on SQLite storage.
    #[arg(long, default_value = "agl-store-sqlite")]
    pub sqlite: String,
    /// Label of the SQLite store grown with finished rollouts and restarted on its file.
    #[arg(long, default_value = "agl-store-sqlite-history")]
    pub history: String,
    /// Markdown file appended at the end, if it exists (profiles, what limits a path).
    #[arg(long)]
    pub notes: Option<PathBuf>,
    /// Result files written by run, grow and startup.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `agl-bench dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// The agl-store binary (release build).
    #[arg(
        long,
        env = "AGL_BENCH_STORE_BIN",
        default_value = "target/release/agl-store"
    )]
    pub store_bin: PathBuf,
    /// Further argument for every agl-store start (repeatable), e.g.
    /// `--store-arg=--sqlite-durability=normal`.
    #[arg(long = "store-arg", allow_hyphen_values = true)]
    pub store_args: Vec<String>,
    /// Storage backends to measure, in turn.
    #[arg(long, value_delimiter = ',', default_value = "memory,sqlite")]
    pub backends: Vec<Backend>,
    /// Rollouts to enqueue: nine in ten are dequeued and given spans, of which about one
    /// in nine stays running and the others finish (one in eight failed).
    #[arg(long, default_value_t = 100_000)]
    pub rollouts: u64,
    /// Spans spread over the dequeued rollouts (OTLP).
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Spans of the one big rollout.
    #[arg(long, default_value_t = 5_000)]
    pub big_rollout_spans: u64,
    /// Resource versions to add.
    #[arg(long, default_value_t = 200)]
    pub resource_versions: u64,
    /// Measured requests per page.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// Unmeasured requests per page before them (at least 1: the first is reported).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Seconds a page's measured requests may take; a slower page gets fewer requests.
    #[arg(long, default_value_t = 120.0)]
    pub page_seconds: f64,
    /// Concurrent clients of the fill, each a worker (`runner-00`, ...) that dequeues.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Folder for the SQLite file (default: a new folder under the temporary folder); the
    /// file is removed afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds to keep each filled server running after its measurement (its address and
    /// pid are printed), for a profiler or a look by hand.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Keep the SQLite file afterwards (its path is printed).
    #[arg(long)]
    pub keep_db: bool,
    /// Write the results here as JSON (again after each backend, so a run cut short keeps
    /// what it measured).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the Markdown tables here (default: stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Measure nothing: render the Markdown of this earlier `--json` file (repeatable:
    /// the tables are the first file's, followed by each page's spread over all of them).
    #[arg(long, conflicts_with = "json")]
    pub render: Vec<PathBuf>,
}

/// Refuses anything but a loopback target: this generator must never load another host.
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// targets are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(loopback, "{url}: only loopback targets are allowed");
    Ok(())
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{what} must be a non-negative number"))
}

fn write_json(path: Option<&PathBuf>, value: &ResultFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn summary(result: &crate::results::RunResult) {
    for s in &result.scenarios {
        for p in &s.paths {
            eprintln!(
                "{:>10} {:<14} {:<60} {:>10.1}/s p50 {:>8.2} ms p99 {:>8.2} ms max {:>8.1} ms errors {}",
                result.label,
                s.name,
                p.path,
                p.throughput_per_s,
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                p.errors
            );
        }
    }
}

/// Runs a parsed command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => {
            for target in a.target.split(',') {
                check_loopback(target.trim())?;
            }
            anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
            let cfg = RunConfig {
                target: a.target,
                label: a.label,
                concurrency: a.concurrency,
                duration: secs(a.duration, "duration")?,
                warmup: secs(a.warmup, "warmup")?,
                scenarios: if a.scenarios.is_empty() {
                    Scenario::ALL.to_vec()
                } else {
                    a.scenarios
                },
                server_pid: a.server_pid,
                sizes: if a.tiny {
                    Sizes::tiny()
                } else {
                    Sizes::default()
                },
                model_url: a.model_url,
            };
            let result = scenario::run(&cfg).await?;
            summary(&result);
            write_json(a.json.as_ref(), &ResultFile::Run(result))
        }
        Command::Ceiling(a) => {
            let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
                .await
                .with_context(|| format!("binding {}:{}", a.host, a.port))?;
            eprintln!("ceiling listening on {}", listener.local_addr()?);
            crate::ceiling::serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
        Command::Grow(a) => {
            check_loopback(&a.target)?;
            anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
            let mut sizes = a.sizes;
            sizes.sort_unstable();
            let cfg = GrowConfig {
                target: a.target,
                label: a.label,
                server_pid: a.server_pid,
                sizes,
                rollouts: a.rollouts,
                concurrency: a.concurrency,
                step_duration: secs(a.step_duration, "step-duration")?,
                step_warmup: Duration::from_millis(300),
                disk_file: a.disk_file,
                finish: a.finish,
            };
            let result = grow::grow(&cfg).await?;
            write_json(a.json.as_ref(), &ResultFile::Grow(result))
        }
        Command::Startup(a) => {
            let cfg = StartupConfig {
                label: a.label,
                port: a.port,
                command: a.command,
                repeat: a.repeat,
                limit: Duration::from_secs(120),
                fresh_file: a.fresh_file,
            };
            let result = startup::startup(&cfg).await?;
            eprintln!(
                "{}: exec to healthy {:.1} ms (median of {:?}), idle RSS {} KiB",
                result.label, result.median_ms, result.runs_ms, result.idle_rss_kb
            );
            write_json(a.json.as_ref(), &ResultFile::Startup(result))
        }
        Command::Dashboard(a) => {
            let results = if a.render.is_empty() {
                anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
                anyhow::ensure!(a.requests > 0, "--requests must be at least 1");
                anyhow::ensure!(!a.backends.is_empty(), "no --backends to measure");
                let cfg = DashboardConfig {
                    store_bin: a.store_bin,
                    store_args: a.store_args,
                    backends: a.backends,
                    rollouts: a.rollouts,
                    spans: a.spans,
                    big_rollout_spans: a.big_rollout_spans,
                    resource_versions: a.resource_versions,
                    requests: a.requests,
                    warmup: a.warmup.max(1),
                    page_budget: secs(a.page_seconds, "page-seconds")?,
                    concurrency: a.concurrency,
                    dir: a.dir,
                    keep_db: a.keep_db,
                    json: a.json,
                    hold: secs(a.hold, "hold")?,
                    command: std::env::args().collect(),
                };
                vec![dashboard::dashboard(&cfg).await?]
            } else {
                let mut results = Vec::new();
                for path in &a.render {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    match serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", path.display()))?
                    {
                        ResultFile::Dashboard(r) => results.push(r),
                        _ => anyhow::bail!("{} is not a dashboard result", path.display()),
                    }
                }
                results
            };
            let md = dashboard::markdown(&results);
            match &a.markdown {
                Some(p) => {
                    std::fs::write(p, md).with_context(|| format!("writing {}", p.display()))
                }
                None => {
                    print!("{md}");
                    Ok(())
                }
            }
        }
        Command::Report(a) => {
            let mut files = Vec::new();
            for path in &a.files {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                files.push(
                    serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", path.display()))?,
                );
            }
            let notes = match &a.notes {
                Some(p) if p.exists() => Some(std::fs::read_to_string(p)?),
                _ => None,
            };
            let opts = ReportOptions {
                ours: a.ours,
                baseline: a.baseline,
                ceiling: a.ceiling,
                sqlite: a.sqlite,
                history: a.history,
                command: a.command,
                notes,
            };
            print!("{}", report::render(files, &opts));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:4747",
            "http://localhost:1/",
            "http://[::1]:80",
            "http://127.1.2.3:9",
        ] {
            check_loopback(ok).unwrap();
        }
        for bad in [
            "http://10.0.0.1:4747",
            "http://example.com",
            "https://127.0.0.1:1",
            "http://0.0.0.0:4747",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
