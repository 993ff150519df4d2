//! `agl-vllm bench-overhead`: what the proxy adds to a call, measured against the test
//! double called directly.
//!
//! Everything runs in this process on loopback: the double ([`crate::double`], no token
//! delay), the proxy in front of it, and one client that sends the same request by three
//! paths in turn (so drift affects them alike): straight to the double, through the proxy
//! untracked (`/v1/...`), and through the proxy as a rollout call
//! (`/rollout/{r}/attempt/{a}/v1/...`, which also fetches a sequence id and records the
//! call) when `--store-url` names a running store. Non-streaming calls give the latency
//! percentiles; streams of `--stream-tokens` tokens give the time to first token and the
//! throughput. The result is a Markdown report on stdout.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::args::ProxyArgs;
use crate::double::{Double, DoubleConfig};
use crate::server::App;
use crate::sse::{Accumulator, EventParser};

/// `agl-vllm bench-overhead`.
#[derive(Debug, Parser)]
#[command(
    name = "agl-vllm bench-overhead",
    about = "Measure the latency and throughput the proxy adds, against the vLLM test double"
)]
pub struct BenchArgs {
    /// Measured non-streaming calls per path
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Unmeasured calls per path first
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Measured streams per path
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Tokens per stream
    #[arg(long, default_value_t = 256)]
    pub stream_tokens: usize,
    /// Paced streams per path: tokens `--paced-token-ms` apart, as a GPU produces them
    #[arg(long, default_value_t = 10)]
    pub paced_streams: usize,
    /// Milliseconds between the tokens of paced streams
    #[arg(long, default_value_t = 2)]
    pub paced_token_ms: u64,
    /// A running LightningStore, to measure rollout calls too (sequence id and recording)
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
}

/// Runs the benchmark on `args` (what follows `bench-overhead`).
pub fn run(args: &[String]) -> ExitCode {
    let cli = match BenchArgs::try_parse_from(
        std::iter::once("agl-vllm bench-overhead".to_owned()).chain(args.iter().cloned()),
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
            eprintln!("agl-vllm bench-overhead: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&cli)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("agl-vllm bench-overhead: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which streams of a path a report section shows.
type Pick = fn(&Path) -> &Streams;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?)
}

/// Time to first token and total time of the streams of one path.
struct Streams {
    ttft: Histogram<u64>,
    total: Histogram<u64>,
}

impl Streams {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ttft: histogram()?,
            total: histogram()?,
        })
    }
}

struct Path {
    name: &'static str,
    base: String,
    latency: Histogram<u64>,
    burst: Streams,
    paced: Streams,
}

impl Path {
    fn new(name: &'static str, base: String) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            base,
            latency: histogram()?,
            burst: Streams::new()?,
            paced: Streams::new()?,
        })
    }
}

/// Sends `count` streams per path (after `warm` unmeasured ones), path by path in turn.
async fn streams(
    client: &reqwest::Client,
    paths: &mut [Path],
    request: &Value,
    warm: usize,
    count: usize,
    pick: fn(&mut Path) -> &mut Streams,
) -> anyhow::Result<()> {
    for i in 0..warm + count {
        for path in paths.iter_mut() {
            let started = Instant::now();
            let response = client
                .post(format!("{}/v1/chat/completions", path.base))
                .json(request)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{} answered {}",
                path.name,
                response.status()
            );
            let mut body = response.bytes_stream();
            let mut parser = EventParser::default();
            let mut acc = Accumulator::default();
            let mut first = None;
            while let Some(chunk) = body.next().await {
                parser.feed(&chunk?, |event| {
                    if acc.push(event) && first.is_none() {
                        first = Some(started.elapsed());
                    }
                });
            }
            let total = started.elapsed();
            anyhow::ensure!(
                acc.done(),
                "{}: the stream did not end with [DONE]",
                path.name
            );
            if i >= warm {
                let s = pick(path);
                s.ttft.record(nanos(first.unwrap_or(total)))?;
                s.total.record(nanos(total))?;
            }
        }
    }
    Ok(())
}

async fn bench(cli: &BenchArgs) -> anyhow::Result<String> {
    let double = Double::start(DoubleConfig::default()).await?;
    let mut proxy_args = ProxyArgs {
        host: "127.0.0.1".into(),
        port: 0,
        store_url: cli.store_url.clone(),
        ..ProxyArgs::default()
    };
    proxy_args.export_interval_seconds = 0.05;
    let app = App::build(&proxy_args, &double.url(), None).await?;
    let proxy_url = format!("http://{}", app.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = agl_common::tls::http_client()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    wait_ready(&client, &proxy_url).await?;

    let mut paths = vec![
        Path::new("vLLM double, direct", double.url())?,
        Path::new("through the proxy, untracked (/v1)", proxy_url.clone())?,
    ];
    if let Some(store) = &cli.store_url {
        let (rollout, attempt) = start_rollout(&client, store).await?;
        paths.push(Path::new(
            "through the proxy, rollout call (/rollout/…/v1)",
            format!("{proxy_url}/rollout/{rollout}/attempt/{attempt}"),
        )?);
    }

    let call = json!({
        "model": "agl-model",
        "messages": [{"role": "system", "content": "You are a benchmark."},
                     {"role": "user", "content": "measure the overhead of the proxy please"}],
        "max_tokens": 16,
        "return_token_ids": true,
    });
    for i in 0..cli.warmup + cli.requests {
        for path in &mut paths {
            let started = Instant::now();
            let response = client
                .post(format!("{}/v1/chat/completions", path.base))
                .json(&call)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{} answered {}",
                path.name,
                response.status()
            );
            let _ = response.bytes().await?;
            if i >= cli.warmup {
                path.latency.record(nanos(started.elapsed()))?;
            }
        }
    }

    let burst = json!({
        "model": "agl-model",
        "messages": [{"role": "user", "content": "[[long]] stream many tokens"}],
        "max_tokens": cli.stream_tokens,
        "stream": true,
        "return_token_ids": true,
    });
    streams(
        &client,
        &mut paths,
        &burst,
        cli.warmup.min(20),
        cli.streams,
        |p| &mut p.burst,
    )
    .await?;
    let paced = json!({
        "model": "agl-model",
        "messages": [{"role": "user", "content": format!("[[long]] [[slow:{}]] paced tokens", cli.paced_token_ms)}],
        "max_tokens": cli.stream_tokens,
        "stream": true,
        "return_token_ids": true,
    });
    streams(&client, &mut paths, &paced, 1, cli.paced_streams, |p| {
        &mut p.paced
    })
    .await?;

    let _ = stop.send(());
    let _ = server.await;
    double.stop().await;
    Ok(report(cli, &paths))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

fn report(cli: &BenchArgs, paths: &[Path]) -> String {
    let direct = &paths[0];
    let mut out = String::new();
    out.push_str(&format!(
        "Non-streaming chat completions, {} sequential calls per path (after {} warm-up), latency in ms:\n\n",
        cli.requests, cli.warmup
    ));
    out.push_str("| path | p50 | p90 | p99 | mean | added at p50 | added at p99 |\n|---|---|---|---|---|---|---|\n");
    for p in paths {
        let q = |h: &Histogram<u64>, x: f64| h.value_at_quantile(x) as f64;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            ms(q(&p.latency, 0.5)),
            ms(q(&p.latency, 0.9)),
            ms(q(&p.latency, 0.99)),
            ms(p.latency.mean()),
            ms(q(&p.latency, 0.5) - q(&direct.latency, 0.5)),
            ms(q(&p.latency, 0.99) - q(&direct.latency, 0.99)),
        ));
    }
    let tokens = cli.stream_tokens as f64;
    let paced_title = format!(
        "tokens paced like a GPU's decode, {} ms apart",
        cli.paced_token_ms
    );
    let sections: [(&str, Pick, usize); 2] = [
        (
            "all tokens at once (the double does not pace them): the proxy's own ceiling per stream",
            |p| &p.burst,
            cli.streams,
        ),
        (&paced_title, |p| &p.paced, cli.paced_streams),
    ];
    for (title, pick, count) in sections {
        out.push_str(&format!(
            "\nStreams of {} tokens, {title}; {count} per path. Time to first token (ms), median stream time, throughput:\n\n",
            cli.stream_tokens
        ));
        out.push_str("| path | TTFT p50 | TTFT p99 | added TTFT p50 | stream p50 (ms) | added per token (µs) | tokens/s | vs direct |\n|---|---|---|---|---|---|---|---|\n");
        let median = |p: &Path| pick(p).total.value_at_quantile(0.5) as f64;
        for p in paths {
            let s = pick(p);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} % |\n",
                p.name,
                ms(s.ttft.value_at_quantile(0.5) as f64),
                ms(s.ttft.value_at_quantile(0.99) as f64),
                ms(s.ttft.value_at_quantile(0.5) as f64
                    - pick(direct).ttft.value_at_quantile(0.5) as f64),
                ms(median(p)),
                (median(p) - median(direct)) / tokens / 1e3,
                tokens / (median(p) / 1e9),
                100.0 * median(direct) / median(p),
            ));
        }
    }
    out
}

async fn wait_ready(client: &reqwest::Client, proxy: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(format!("{proxy}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the proxy did not become ready in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_rollout(client: &reqwest::Client, store: &str) -> anyhow::Result<(String, String)> {
    let url = format!("{}/v1/agl/rollouts", store.trim_end_matches('/'));
    let rollout: Value = client
        .post(&url)
        .json(&json!({"input": {"benchmark": "agl-vllm bench-overhead"}}))
        .send()
        .await
        .with_context(|| format!("cannot reach the store at {url}"))?
        .json()
        .await?;
    let id = rollout["rollout_id"]
        .as_str()
        .context("no rollout_id from the store")?;
    let attempt = rollout["attempt"]["attempt_id"]
        .as_str()
        .context("no attempt from the store")?;
    Ok((id.to_owned(), attempt.to_owned()))
}
