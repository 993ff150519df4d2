//! `agl-agentops`: an AgentOps endpoint that runs offline. The unmodified `agentops` SDK
//! (0.4.13 – 0.4.21) authenticates against it, exports its OTLP spans to it and uploads its
//! console logs to it; the service keeps what arrives (bounded), shows it through a
//! read-only JSON API and an HTML dashboard, and can forward the spans to an OpenTelemetry
//! receiver such as the LightningStore.
//!
//! # Layout
//!
//! * [`args`]: the flags (the reference's `--port`/`--daemon`, and ours);
//! * [`api`]: the routes the SDK calls, the inspection API, the 404/405 fallbacks;
//! * [`dashboard`]: the HTML pages (traces, a trace's waterfall and logs, a span);
//! * [`error`]: every request failure, mapped to HTTP once;
//! * [`retention`]: spans by trace, logs and objects in memory, within caps;
//! * [`forward`]: re-posting trace batches through bounded queues with retry;
//! * [`metrics`]: the service's Prometheus counters, and their since-reset JSON view;
//! * [`env`]: the environment block agents export;
//! * [`daemon`]: `--daemon`, the pid file and the ready handshake;
//! * [`server`]: binding, wiring and the serve loop with its drain period.
//!
//! [`run`] is the whole program, shared by `agl-agentops` and `agl agentops`.

pub mod api;
pub mod args;
pub mod daemon;
pub mod dashboard;
pub mod env;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod retention;
pub mod server;

use std::io::Write as _;
use std::process::ExitCode;

pub use args::AgentopsArgs;
pub use server::App;

/// Runs the command: `--print-env`, `--daemon` (the parent side), or the server itself.
pub fn run(args: &AgentopsArgs) -> ExitCode {
    if args.print_env {
        let base = env::base_url(args.public_url.as_deref(), &args.host, args.port);
        print!("{}", env::block(&base, args.key.configured()));
        return ExitCode::SUCCESS;
    }
    if args.healthcheck {
        let probe = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(agl_common::probe::probe(
                    args.port,
                    "/readyz",
                    std::time::Duration::from_secs(3),
                    args.listen.tls.tls_cert.as_deref(),
                ))
            });
        return match probe {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("agl agentops: not healthy: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.daemon && !daemon::is_child() {
        return daemon::start(args);
    }
    if daemon::is_child() {
        daemon::detach();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agl agentops: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match agl_common::telemetry::init("agl-agentops", &args.log, &args.tls_client) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("agl agentops: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = App::build(args).await?;
        let _pid_file = daemon::pid_file(args)
            .map(daemon::PidFile::create)
            .transpose()?;
        let addr = app.local_addr()?;
        announce(&app, addr);
        daemon::notify_ready(addr);
        app.run_until(
            agl_common::shutdown::signal(),
            agl_common::shutdown::signal(),
        )
        .await
    });
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "agl-agentops failed");
    }
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agl agentops: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints where the server listens and the environment block, on stdout (logs go to
/// stderr), so a launcher reading stdout learns the port even with `--port 0`.
fn announce(app: &App, addr: std::net::SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "# agl-agentops listening on {addr}; agents should export:\n{}",
        env::block(app.base_url(), app.keyed())
    );
    let _ = out.flush();
}
