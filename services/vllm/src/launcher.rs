//! `agl vllm [--agl-FLAG …] [vllm-cli-options]`: vLLM with its arguments passed through
//! unchanged, behind the proxy.
//!
//! `vllm serve …` runs in a process group of its own (vLLM starts engine and worker
//! processes) while the proxy listens on `--agl-port`. The launcher waits for vLLM to
//! answer `/v1/models` and says so; when vLLM exits on its own it is started again with
//! exponential backoff (`--agl-restart`, `--agl-max-restarts`). On SIGTERM or SIGINT the
//! proxy stops taking generation calls and lets in-flight ones finish
//! (`--agl-shutdown-timeout-seconds`), then SIGTERM goes to vLLM's process group, which
//! gets `--agl-kill-timeout-seconds` to exit before the group is killed; agl-vllm exits
//! with vLLM's status (128 + the signal number for a signal). A second signal skips the
//! waiting.
//!
//! Any other command (`--version`, `--help`, `chat`, `bench`, …) is one-shot: vLLM runs in
//! the foreground (same process group, so the terminal works), SIGTERM is passed on, and
//! its status is agl-vllm's.

use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use agl_common::ops::Health;
use clap::Parser as _;
use rustix::process::{Pid, Signal, kill_process, kill_process_group, test_kill_process_group};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use crate::args::{
    LaunchArgs, LaunchCli, RestartPolicy, VllmArgs, launch_help, seconds, split_launch_args,
};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server::App;
use crate::upstream::{self, Upstream};

/// Runs the launcher on `argv` (everything after `agl vllm` / `agl-vllm [launch]`).
pub fn run(prog: &str, argv: &[String]) -> ExitCode {
    let (ours, vllm_args) = match split_launch_args(argv) {
        Ok(split) => split,
        Err(err) => {
            eprintln!("{prog}: {err}");
            return ExitCode::from(2);
        }
    };
    if ours.iter().any(|a| a == "--help") {
        println!("{}", launch_help());
        return ExitCode::SUCCESS;
    }
    if ours.iter().any(|a| a == "--version") {
        println!("agl-vllm {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cli = match LaunchCli::try_parse_from(std::iter::once(prog.to_owned()).chain(ours)) {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("{prog}: invalid --agl-* flag (written here without the prefix): {err}");
            return ExitCode::from(2);
        }
    };
    let vllm = match VllmArgs::parse(&vllm_args) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("{prog}: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{prog}: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if !vllm.is_serve() {
        return runtime.block_on(one_shot(prog, &cli.args, &vllm_args));
    }
    let telemetry = match agl_common::telemetry::init(
        "agl-vllm",
        &cli.args.proxy.log,
        &cli.args.proxy.tls_client,
    ) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("{prog}: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(&cli.args, &vllm, &vllm_args));
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(Failure::Spawn(code, message)) => {
            eprintln!("{prog}: {message}");
            code
        }
        Err(Failure::Other(err)) => {
            eprintln!("{prog}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why the launcher stopped before vLLM had a status to exit with.
enum Failure {
    /// vLLM could not be started (exit code, message).
    Spawn(ExitCode, String),
    /// Anything else (flags, ports, signals).
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Self::Other(err.into())
    }
}

/// Why vLLM could not be started, with the shell's codes: 127 not found, 126 not
/// executable.
fn spawn_failure(bin: &str, err: &std::io::Error) -> (ExitCode, String) {
    match err.kind() {
        std::io::ErrorKind::NotFound => (
            ExitCode::from(127),
            format!(
                "cannot run {bin:?}: not found. Install vLLM 0.10.2 or newer (pip install vllm), \
                 or name the executable with --agl-vllm-bin PATH or AGL_VLLM_BIN. \
                 (--help and --version are vLLM's; --agl-help lists the launcher's own flags.)"
            ),
        ),
        std::io::ErrorKind::PermissionDenied => (
            ExitCode::from(126),
            format!("cannot run {bin:?}: permission denied"),
        ),
        _ => (ExitCode::FAILURE, format!("cannot run {bin:?}: {err}")),
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "sigterm",
            _ = self.int.recv() => "sigint",
        }
    }
}

async fn one_shot(prog: &str, args: &LaunchArgs, vllm_args: &[String]) -> ExitCode {
    let signals = signal(SignalKind::terminate())
        .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    let (mut term, mut int) = match signals {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{prog}: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(&args.vllm_bin).args(vllm_args).spawn() {
        Ok(child) => child,
        Err(err) => {
            let (code, message) = spawn_failure(&args.vllm_bin, &err);
            eprintln!("{prog}: {message}");
            return code;
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => ExitCode::from(exit_code(status)),
                    Err(err) => {
                        eprintln!("{prog}: lost track of vllm: {err}");
                        ExitCode::FAILURE
                    }
                };
            }
            _ = term.recv() => {
                if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw) {
                    let _ = kill_process(pid, Signal::Term);
                }
            }
            // A Ctrl-C reaches vLLM from the terminal too (same process group): agl-vllm
            // only stays alive to report vLLM's status.
            _ = int.recv() => {}
        }
    }
}

/// Prints a line on stdout for whoever started agl-vllm (a terminal, a test), beside the
/// log lines on stderr.
fn announce(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "agl-vllm: {line}");
    let _ = out.flush();
}

async fn serve(
    args: &LaunchArgs,
    vllm: &VllmArgs,
    vllm_args: &[String],
) -> Result<ExitCode, Failure> {
    let mut signals = Signals::new()?;
    let proxied = !args.no_proxy;
    if vllm.uds && proxied && args.proxy.upstream.is_none() {
        return Err(anyhow::anyhow!(
            "vllm's --uds puts it on a unix socket the proxy cannot reach: serve it on --port, \
             or run without the proxy (--agl-no-proxy)"
        )
        .into());
    }
    if proxied && args.proxy.upstream.is_none() && args.proxy.port == vllm.port {
        return Err(anyhow::anyhow!(
            "vllm and the proxy would both listen on port {}: give vllm an internal port \
             (e.g. `serve MODEL --port 8001`, agents keep calling {}) or move the proxy with \
             --agl-port",
            vllm.port,
            args.proxy.port
        )
        .into());
    }
    // vLLM binds its port only once the model is loaded, minutes from now: say at once
    // when it cannot.
    if let Err(err) = std::net::TcpListener::bind(vllm.bind_addr())
        && err.kind() == std::io::ErrorKind::AddrInUse
    {
        return Err(anyhow::anyhow!(
            "vllm's port {} is already in use (by another vllm?): stop that process or pass \
             vllm another --port",
            vllm.port
        )
        .into());
    }
    let upstream_url = args
        .proxy
        .upstream
        .clone()
        .unwrap_or_else(|| vllm.local_url());

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (stop_monitor, monitor_rx) = watch::channel(false);
    let (proxy, upstream, server, monitor) = if proxied {
        let app = App::build(&args.proxy, &upstream_url, vllm.api_key.clone()).await?;
        let addr = app.local_addr().map_err(Failure::Other)?;
        announce(&format!(
            "proxy listening on http://{addr}, vllm at {upstream_url}"
        ));
        let proxy = app.proxy();
        let upstream = Arc::clone(proxy.upstream());
        let server = tokio::spawn(app.run_until(async {
            let _ = stop_rx.await;
        }));
        (Some(proxy), upstream, Some(server), None)
    } else {
        // No proxy: still follow vLLM's readiness, to report it.
        let upstream = Arc::new(Upstream::new(&upstream_url, vllm.api_key.clone()));
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new())?);
        let client = agl_common::tls::http_client()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(anyhow::Error::from)?;
        let monitor = tokio::spawn(upstream::monitor(
            Arc::clone(&upstream),
            client,
            seconds(args.proxy.health_interval_seconds).max(Duration::from_millis(50)),
            Arc::new(Health::default()),
            metrics,
            monitor_rx,
        ));
        (None, upstream, None, Some(monitor))
    };

    let supervisor = Supervisor {
        args,
        vllm,
        vllm_args,
        upstream,
        proxy,
    };
    let outcome = supervisor.run(&mut signals).await;
    let _ = stop_tx.send(());
    let _ = stop_monitor.send(true);
    if let Some(server) = server {
        match server.await {
            Ok(Err(err)) => tracing::error!(error = format!("{err:#}"), "the proxy failed"),
            Err(err) => tracing::error!(error = %err, "the proxy task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(monitor) = monitor {
        let _ = monitor.await;
    }
    outcome.map(ExitCode::from)
}

struct Supervisor<'a> {
    args: &'a LaunchArgs,
    vllm: &'a VllmArgs,
    vllm_args: &'a [String],
    upstream: Arc<Upstream>,
    proxy: Option<Arc<Proxy>>,
}

impl Supervisor<'_> {
    fn spawn(&self) -> Result<(Child, Pid), Failure> {
        let mut command = Command::new(&self.args.vllm_bin);
        command.args(self.vllm_args).process_group(0);
        let child = command.spawn().map_err(|err| {
            let (code, message) = spawn_failure(&self.args.vllm_bin, &err);
            Failure::Spawn(code, message)
        })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| {
                Failure::Other(anyhow::anyhow!("vllm exited before it could be tracked"))
            })?;
        Ok((child, pid))
    }

    fn restarts(&self) -> Option<&Metrics> {
        self.proxy.as_deref().map(|p| p.metrics().as_ref())
    }

    /// Runs vLLM until it is told to stop or gives up; vLLM's last status.
    async fn run(&self, signals: &mut Signals) -> Result<u8, Failure> {
        let initial_delay = seconds(self.args.restart_delay_seconds);
        let max_delay = seconds(self.args.restart_max_delay_seconds).max(initial_delay);
        let mut delay = initial_delay;
        let mut failures = 0u32;
        loop {
            let (mut child, pgid) = self.spawn()?;
            tracing::info!(pid = pgid.as_raw_nonzero().get(), bin = %self.args.vllm_bin, args = ?self.vllm_args, "started vllm");
            self.upstream.set_down();
            let mut ready = self.upstream.subscribe();
            ready.mark_unchanged();
            let mut seen_ready = false;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    which = signals.next() => {
                        tracing::info!(signal = which, "shutting down");
                        return self.shutdown(child, pgid, signals).await;
                    }
                    changed = ready.changed(), if !seen_ready => {
                        if changed.is_ok() && *ready.borrow_and_update() {
                            seen_ready = true;
                            failures = 0;
                            delay = initial_delay;
                            announce(&format!("vllm is ready at {} (models: {})", self.upstream.base(), self.upstream.models().join(", ")));
                        }
                    }
                }
            };
            self.upstream.set_down();
            reap_group(pgid, Duration::from_secs(2)).await;
            let code = exit_code(status);
            let wanted = match self.args.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::Always => true,
            };
            if !wanted {
                tracing::info!(status = %status, "vllm exited");
                return Ok(code);
            }
            if failures >= self.args.max_restarts {
                tracing::error!(
                    status = %status,
                    restarts = failures,
                    "vllm keeps exiting without becoming ready; giving up"
                );
                return Ok(code);
            }
            failures += 1;
            if let Some(metrics) = self.restarts() {
                metrics.restarts.inc();
            }
            tracing::warn!(
                status = %status,
                delay_seconds = delay.as_secs_f64(),
                attempt = failures,
                max_restarts = self.args.max_restarts,
                "vllm exited; starting it again"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                which = signals.next() => {
                    tracing::info!(signal = which, "signal while waiting to restart vllm; exiting");
                    return Ok(code);
                }
            }
            delay = (delay * 2).min(max_delay);
        }
    }

    /// Drains the proxy, stops vLLM's process group (SIGTERM, then SIGKILL after the kill
    /// timeout), and returns vLLM's status.
    async fn shutdown(
        &self,
        mut child: Child,
        pgid: Pid,
        signals: &mut Signals,
    ) -> Result<u8, Failure> {
        if let Some(proxy) = &self.proxy {
            proxy.start_draining();
            let timeout = seconds(self.args.proxy.shutdown_timeout_seconds);
            if proxy.in_flight() > 0 {
                tracing::info!(
                    in_flight = proxy.in_flight(),
                    timeout_seconds = timeout.as_secs_f64(),
                    "waiting for in-flight calls before stopping vllm"
                );
            }
            tokio::select! {
                idle = proxy.wait_idle(timeout) => if !idle {
                    tracing::warn!(in_flight = proxy.in_flight(), "in-flight calls outlived the shutdown timeout; stopping vllm anyway");
                },
                which = signals.next() => tracing::warn!(signal = which, "second signal: stopping vllm now"),
            }
        }
        let kill_after = seconds(self.args.kill_timeout_seconds.unwrap_or_else(|| {
            self.vllm
                .shutdown_timeout
                .map_or(15.0, |s| s + 15.0)
                .max(15.0)
        }));
        tracing::info!(
            pgid = pgid.as_raw_nonzero().get(),
            "sending sigterm to vllm's process group"
        );
        let _ = kill_process_group(pgid, Signal::Term);
        let exited = tokio::select! {
            status = child.wait() => Some(status?),
            () = tokio::time::sleep(kill_after) => None,
            which = signals.next() => {
                tracing::warn!(signal = which, "another signal: killing vllm now");
                None
            }
        };
        let status = match exited {
            Some(status) => status,
            None => {
                tracing::warn!(
                    timeout_seconds = kill_after.as_secs_f64(),
                    "vllm did not exit after sigterm; killing its process group"
                );
                let _ = kill_process_group(pgid, Signal::Kill);
                child.wait().await?
            }
        };
        self.upstream.set_down();
        reap_group(pgid, kill_after.min(Duration::from_secs(5))).await;
        tracing::info!(status = %status, "vllm stopped");
        Ok(exit_code(status))
    }
}

/// Waits up to `wait` for what is left of vLLM's process group (engine and worker
/// processes outliving the leader) to exit, then kills it. Zombies reparented to
/// agl-vllm (when it runs as a container's PID 1) are reaped on the way; vLLM itself was
/// already reaped, so no process tokio waits for can be taken.
async fn reap_group(pgid: Pid, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        while let Ok(Some(_)) = rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
        {
        }
        if test_kill_process_group(pgid).is_err() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                pgid = pgid.as_raw_nonzero().get(),
                "processes of vllm's group outlived it; killing them"
            );
            let _ = kill_process_group(pgid, Signal::Kill);
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(Some(_)) =
                rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
            {}
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn statuses_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
