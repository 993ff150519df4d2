//! `agl-vllm`: vLLM behind a token-capturing proxy that records every LLM call of a
//! rollout into the LightningStore, in the form upstream's trainer reads.
//!
//! Two ways to run it:
//!
//! * **launcher** (`agl vllm [--agl-FLAG …] serve MODEL --port 8001 …`, or
//!   `agl-vllm [launch] …`): runs `vllm` with every other argument unchanged, in a process
//!   group of its own, with the proxy in front of it on `--agl-port` (default 8000);
//!   restarts it when it dies, drains and stops it on SIGTERM, exits with its status;
//! * **sidecar** (`agl-vllm proxy --upstream http://127.0.0.1:8001 --port 8000`): the
//!   proxy alone, next to an official vLLM container.
//!
//! Agents call `http://PROXY/rollout/{rollout_id}/attempt/{attempt_id}/v1` as their
//! OpenAI base URL. Each chat or text completion there gets `return_token_ids: true`, a
//! sequence id from the store when it arrives, and, once answered (streams pass through
//! byte for byte as they arrive), becomes the `litellm_request` / `raw_gen_ai_request`
//! spans that `LlmProxyTraceToTriplet` turns into training triplets.
//!
//! # Layout
//!
//! * [`args`]: flags, the `--agl-*` split, and what is read from vLLM's arguments;
//! * [`launcher`]: the child process: start, readiness, restarts, signals, exit status;
//! * [`server`]: binding and the serve loop; [`proxy`]: routes, rewrite, forwarding, tee;
//! * [`upstream`]: vLLM's readiness, folded into `/readyz`;
//! * [`store`]: finding the store and taking sequence ids;
//! * [`call`], [`sse`]: a call as the tee kept it, streams added up to full responses (from
//!   `agl-llm-proxy`, the engine shared with the store's v1 proxy, with the tee, the
//!   rewrite and the pause gate);
//! * [`spans`], [`pyrepr`]: the spans upstream reads, Python literals for its parser;
//! * [`recorder`]: bounded queues, batches, retries, flush at shutdown;
//! * [`metrics`], [`error`]: Prometheus collectors; proxy errors mapped to HTTP once;
//! * [`double`]: a test double of vLLM's OpenAI server (tests and benchmark only; the
//!   engine's, shared with the store's proxy tests);
//! * [`mod@bench`]: `agl-vllm bench-overhead`.
//!
//! [`run`] is the whole program, shared by `agl-vllm` and `agl vllm`.

pub mod args;
pub mod bench;
pub mod error;
pub mod launcher;
pub mod metrics;
pub mod proxy;
pub mod pyrepr;
pub mod recorder;
pub mod server;
pub mod spans;
pub mod store;
pub mod upstream;

/// A call as the tee kept it, and streams added up to full responses: the shared engine's.
pub use agl_llm_proxy::{call, double, sse};

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

pub use args::{LaunchArgs, ProxyArgs};
pub use server::App;

/// Runs agl-vllm on `args` (everything after the program name; `prog` names it in
/// messages): `proxy`, `bench-overhead`, `healthcheck`, `fake-vllm`, `launch`, or, for
/// anything else, the launcher with the arguments as they are.
pub fn run(prog: &str, args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("proxy") => run_proxy(&args[1..]),
        Some("launch") => launcher::run(prog, &args[1..]),
        Some("bench-overhead") => bench::run(&args[1..]),
        Some("healthcheck") => healthcheck(&args[1..]),
        Some("fake-vllm") => double::main(&args[1..]),
        _ => launcher::run(prog, args),
    }
}

fn run_proxy(args: &[String]) -> ExitCode {
    let cli = match args::ProxyCli::try_parse_from(
        std::iter::once("agl-vllm proxy".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agl-vllm proxy: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry =
        match agl_common::telemetry::init("agl-vllm", &cli.args.log, &cli.args.tls_client) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("agl-vllm proxy: {err:#}");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        let upstream = cli
            .args
            .upstream
            .clone()
            .unwrap_or_else(|| args::DEFAULT_UPSTREAM.to_owned());
        let api_key = std::env::var("VLLM_API_KEY").ok().filter(|k| !k.is_empty());
        let app = App::build(&cli.args, &upstream, api_key).await?;
        let addr = app.local_addr()?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "agl-vllm: proxy listening on http://{addr}, vllm at {upstream}"
        );
        let _ = out.flush();
        drop(out);
        app.run_until(agl_common::shutdown::signal()).await
    });
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "agl-vllm proxy failed");
    }
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agl-vllm proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `agl-vllm healthcheck`: the image's health check (distroless images have no curl).
#[derive(Debug, clap::Parser)]
#[command(
    name = "agl-vllm healthcheck",
    about = "Exit 0 when the proxy on --port answers --path with 2xx"
)]
struct HealthcheckCli {
    /// The proxy's port
    #[arg(long, env = "AGL_VLLM_PROXY_PORT", default_value_t = args::DEFAULT_PORT)]
    port: u16,
    /// The path to probe (/readyz includes vLLM's readiness; /livez only the proxy's)
    #[arg(long, default_value = "/readyz")]
    path: String,
    /// The certificate the proxy serves, when it serves TLS (probed over HTTPS)
    #[arg(long, env = "AGL_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
}

fn healthcheck(args: &[String]) -> ExitCode {
    let cli = match HealthcheckCli::try_parse_from(
        std::iter::once("agl-vllm healthcheck".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(agl_common::probe::probe(
                cli.port,
                &cli.path,
                Duration::from_secs(3),
                cli.tls_cert.as_deref(),
            ))
        });
    match probe {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agl-vllm: not healthy: {err:#}");
            ExitCode::FAILURE
        }
    }
}
