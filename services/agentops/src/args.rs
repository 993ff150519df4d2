//! Flags and environment of `agl agentops` (and the `agl-agentops` binary).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use agl_common::auth::KeyArgs;
use agl_common::cli::LogArgs;
use agl_common::serve::ListenArgs;
use agl_common::tls::ClientTlsArgs;

/// The port the reference's `agl agentops` listens on.
pub const DEFAULT_PORT: u16 = 8002;

/// Flags of `agl agentops`. The first two are the reference's; everything else is ours.
#[derive(Debug, Clone, Args)]
pub struct AgentopsArgs {
    /// Run server as a daemon
    #[arg(long)]
    pub daemon: bool,

    /// Port to run the server on (default: 8002)
    #[arg(
        long,
        value_name = "PORT",
        env = "AGL_AGENTOPS_PORT",
        default_value_t = DEFAULT_PORT,
        hide_default_value = true
    )]
    pub port: u16,

    /// Address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for all interfaces)
    #[arg(
        long,
        value_name = "HOST",
        env = "AGL_AGENTOPS_HOST",
        default_value = "127.0.0.1",
        hide_default_value = true
    )]
    pub host: String,

    /// Base URL agents reach this server at, for the printed environment block and upload
    /// URLs (default: http://HOST:PORT, with 127.0.0.1 for an all-interfaces HOST)
    #[arg(long, value_name = "URL", env = "AGL_AGENTOPS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Print the environment block agents should export, then exit
    #[arg(long)]
    pub print_env: bool,

    /// Exit 0 when the server on --port answers /readyz, else 1 (the image's health check:
    /// it has no shell or curl)
    #[arg(long)]
    pub healthcheck: bool,

    /// Write the process id here (with --daemon the default is
    /// $TMPDIR/agl-agentops-PORT.pid); removed at exit
    #[arg(long, value_name = "PATH", env = "AGL_AGENTOPS_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// With --daemon: where the server's output goes (default: $TMPDIR/agl-agentops-PORT.log)
    #[arg(long, value_name = "PATH", env = "AGL_AGENTOPS_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// With --daemon: seconds to wait for the server to answer /health before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub daemon_timeout_seconds: f64,

    /// Re-post every OTLP trace batch to this OTLP/HTTP receiver, e.g.
    /// http://127.0.0.1:4747/v1/traces (repeatable). Asynchronous: failures are counted,
    /// never reported to the SDK
    #[arg(
        long = "forward-otlp",
        value_name = "URL",
        env = "AGL_AGENTOPS_FORWARD_OTLP",
        value_delimiter = ','
    )]
    pub forward_otlp: Vec<String>,

    /// Resource attribute added to every forwarded batch, e.g.
    /// agentlightning.rollout_id=ro-123 (repeatable)
    #[arg(
        long = "forward-resource-attribute",
        value_name = "KEY=VALUE",
        env = "AGL_AGENTOPS_FORWARD_RESOURCE_ATTRIBUTES",
        value_delimiter = ',',
        value_parser = parse_key_value
    )]
    pub forward_resource_attributes: Vec<(String, String)>,

    /// Batches waiting to be forwarded, per target; beyond it new batches are dropped and
    /// counted
    #[arg(
        long,
        value_name = "BATCHES",
        env = "AGL_AGENTOPS_FORWARD_QUEUE",
        default_value_t = 1024
    )]
    pub forward_queue: usize,

    /// Tries per forwarded batch (connection errors, 408, 429 and 5xx are retried with
    /// exponential backoff)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub forward_attempts: u32,

    /// Seconds one forwarding request may take
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub forward_timeout_seconds: f64,

    /// Key sent to the forwarding targets (`Authorization: Bearer KEY`), e.g. a keyed
    /// agl-store's; prefer `--forward-key-file`
    #[arg(
        long,
        value_name = "KEY",
        env = "AGL_AGENTOPS_FORWARD_KEY",
        hide_env_values = true
    )]
    pub forward_key: Option<String>,

    /// File whose first line is the key sent to the forwarding targets
    #[arg(long, value_name = "FILE", env = "AGL_AGENTOPS_FORWARD_KEY_FILE")]
    pub forward_key_file: Option<PathBuf>,

    /// Spans kept in memory; the oldest are dropped (and counted) beyond it
    #[arg(
        long,
        value_name = "N",
        env = "AGL_AGENTOPS_MAX_SPANS",
        default_value_t = 100_000
    )]
    pub max_spans: usize,

    /// Uploaded logs and objects kept in memory, each; the oldest are dropped beyond it
    #[arg(
        long,
        value_name = "N",
        env = "AGL_AGENTOPS_MAX_UPLOADS",
        default_value_t = 1000
    )]
    pub max_uploads: usize,

    /// Bytes of uploaded logs and objects kept in memory, together; the oldest are dropped
    /// beyond it
    #[arg(
        long,
        value_name = "BYTES",
        env = "AGL_AGENTOPS_MAX_UPLOAD_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub max_upload_bytes: usize,

    /// Largest accepted request body in bytes; larger bodies get a 413 JSON error
    #[arg(
        long,
        value_name = "BYTES",
        env = "AGL_AGENTOPS_MAX_BODY_BYTES",
        default_value_t = agl_common::http::DEFAULT_BODY_LIMIT
    )]
    pub max_body_bytes: usize,

    /// Seconds the server keeps serving after SIGTERM/SIGINT (readiness already 503), so
    /// agents exiting at the same time can still flush spans and upload logs; a second
    /// signal ends it early
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_AGENTOPS_DRAIN_SECONDS",
        default_value_t = 5.0
    )]
    pub drain_seconds: f64,

    /// Seconds in-flight requests and queued forwards get to finish once draining is over
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_AGENTOPS_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10.0
    )]
    pub shutdown_grace_seconds: f64,

    /// Keys the SDK must present: `/v3/auth/token` hands out a token only for one of them
    /// (the SDK's `AGENTOPS_API_KEY`), and every other route needs that token or a key. The
    /// admin key guards the inspection routes (`/_agl/…`, reset included)
    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub listen: ListenArgs,

    #[command(flatten)]
    pub tls_client: ClientTlsArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl AgentopsArgs {
    /// The forwarding targets, without empty items (an empty variable means none).
    pub fn forward_targets(&self) -> Vec<String> {
        self.forward_otlp
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The resource attributes to add, without empty items.
    pub fn forward_attributes(&self) -> Vec<(String, String)> {
        self.forward_resource_attributes
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .cloned()
            .collect()
    }
}

impl Default for AgentopsArgs {
    fn default() -> Self {
        Self {
            daemon: false,
            port: DEFAULT_PORT,
            host: "127.0.0.1".into(),
            public_url: None,
            print_env: false,
            healthcheck: false,
            pid_file: None,
            log_file: None,
            daemon_timeout_seconds: 30.0,
            forward_otlp: Vec::new(),
            forward_resource_attributes: Vec::new(),
            forward_queue: 1024,
            forward_attempts: 5,
            forward_timeout_seconds: 10.0,
            forward_key: None,
            forward_key_file: None,
            max_spans: 100_000,
            max_uploads: 1000,
            max_upload_bytes: 256 * 1024 * 1024,
            max_body_bytes: agl_common::http::DEFAULT_BODY_LIMIT,
            drain_seconds: 5.0,
            shutdown_grace_seconds: 10.0,
            key: KeyArgs::default(),
            listen: ListenArgs::default(),
            tls_client: ClientTlsArgs::default(),
            log: LogArgs::default(),
        }
    }
}

impl AgentopsArgs {
    /// The drain period after a shutdown signal.
    pub fn drain(&self) -> Duration {
        seconds(self.drain_seconds)
    }

    /// The grace period for in-flight work after the drain.
    pub fn grace(&self) -> Duration {
        seconds(self.shutdown_grace_seconds)
    }
}

/// A non-negative duration from a flag (negative or non-finite values count as 0).
pub(crate) fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::ZERO)
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    // An empty item (`AGL_AGENTOPS_FORWARD_RESOURCE_ATTRIBUTES=` in compose) means none;
    // `AgentopsArgs::forward_attributes` drops it.
    if raw.trim().is_empty() {
        return Ok((String::new(), String::new()));
    }
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn empty_forwarding_variables_mean_none() {
        let args = AgentopsArgs {
            forward_otlp: vec![String::new()],
            forward_resource_attributes: vec![parse_key_value("").unwrap()],
            ..AgentopsArgs::default()
        };
        assert!(args.forward_targets().is_empty());
        assert!(args.forward_attributes().is_empty());
        assert!(parse_key_value("=x").is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentopsArgs,
    }

    #[test]
    fn defaults_follow_the_reference() {
        let cli = Cli::try_parse_from(["agl-agentops"]).unwrap();
        assert_eq!(cli.args.port, 8002);
        assert!(!cli.args.daemon);
        assert_eq!(cli.args.host, "127.0.0.1");
    }

    #[test]
    fn forwarding_flags_repeat() {
        let cli = Cli::try_parse_from([
            "agl-agentops",
            "--forward-otlp",
            "http://127.0.0.1:4747/v1/traces",
            "--forward-otlp",
            "http://127.0.0.1:4318/v1/traces",
            "--forward-resource-attribute",
            "agentlightning.rollout_id=ro-1",
            "--forward-resource-attribute",
            "agentlightning.attempt_id=at-1",
        ])
        .unwrap();
        assert_eq!(cli.args.forward_otlp.len(), 2);
        assert_eq!(
            cli.args.forward_resource_attributes,
            vec![
                ("agentlightning.rollout_id".to_owned(), "ro-1".to_owned()),
                ("agentlightning.attempt_id".to_owned(), "at-1".to_owned()),
            ]
        );
        assert!(
            Cli::try_parse_from(["agl-agentops", "--forward-resource-attribute", "novalue"])
                .is_err()
        );
    }
}
