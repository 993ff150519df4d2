//! Command lines: the flags of `agl-vllm proxy`, the launcher's `--agl-*` flags, and what
//! the launcher reads from vLLM's own arguments (which it never changes).

use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, ValueEnum};

use agl_common::auth::KeyArgs;
use agl_common::cli::LogArgs;
use agl_common::serve::ListenArgs;
use agl_common::tls::ClientTlsArgs;

/// The port agents call: the proxy's, as vLLM's default is 8000.
pub const DEFAULT_PORT: u16 = 8000;
/// Where `agl-vllm proxy` finds vLLM unless told otherwise (vLLM on an internal port).
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8001";
/// vLLM's own default `--port`.
pub const VLLM_DEFAULT_PORT: u16 = 8000;
/// The prefix that sets the launcher's flags apart from vLLM's.
pub const AGL_PREFIX: &str = "--agl-";

/// Flags of the proxy, in both modes: `agl-vllm proxy --port 8000 …`, and in the launcher
/// with the `--agl-` prefix (`agl vllm --agl-port 8000 serve …`).
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Port the proxy listens on (0 picks a free one)
    #[arg(long, value_name = "PORT", env = "AGL_VLLM_PROXY_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address the proxy binds
    #[arg(
        long,
        value_name = "HOST",
        env = "AGL_VLLM_PROXY_HOST",
        default_value = "0.0.0.0"
    )]
    pub host: String,

    /// vLLM's base URL [proxy default: http://127.0.0.1:8001; launcher default:
    /// http://127.0.0.1:<vLLM's --port>]
    #[arg(long, value_name = "URL", env = "AGL_VLLM_UPSTREAM")]
    pub upstream: Option<String>,

    /// LightningStore base URL the calls of a rollout are recorded into [default:
    /// http://$AGL_SERVER_HOST:$AGL_SERVER_PORT when either is set; none: calls are served
    /// but not recorded]
    #[arg(long, value_name = "URL", env = "AGL_STORE_URL")]
    pub store_url: Option<String>,

    /// Refuse (503) a rollout call when the store cannot give it a sequence id, instead of
    /// serving it unrecorded
    #[arg(long, env = "AGL_VLLM_REQUIRE_STORE")]
    pub require_store: bool,

    /// Also ask vLLM for the logprobs of the generated tokens (`logprobs: true` on chat,
    /// `logprobs: 1` on text completions), unless the agent asked itself
    #[arg(long, env = "AGL_VLLM_LOGPROBS")]
    pub logprobs: bool,

    /// Replace the `model` of every generation request: a served name, or `auto` for the
    /// only model vLLM serves (agents may then send any alias)
    #[arg(long, value_name = "NAME", env = "AGL_VLLM_SERVED_MODEL")]
    pub served_model: Option<String>,

    /// Ask vLLM for a final usage chunk on streams (`stream_options.include_usage`); the
    /// agent then receives that extra chunk too
    #[arg(long, env = "AGL_VLLM_STREAM_USAGE")]
    pub stream_usage: bool,

    /// Largest request body in bytes; larger ones get 413
    #[arg(long, value_name = "BYTES", env = "AGL_VLLM_MAX_BODY_BYTES",
          default_value_t = agl_common::http::DEFAULT_BODY_LIMIT)]
    pub max_body_bytes: usize,

    /// Largest response kept for the record, in bytes; the agent still receives all of it
    #[arg(long, value_name = "BYTES", env = "AGL_VLLM_MAX_RECORD_BYTES",
          default_value_t = 64 * 1024 * 1024)]
    pub max_record_bytes: usize,

    /// Seconds one call to vLLM may take, streaming included (0: no limit)
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_VLLM_UPSTREAM_TIMEOUT",
        default_value_t = 1800.0
    )]
    pub upstream_timeout_seconds: f64,

    /// Seconds to connect to vLLM
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub connect_timeout_seconds: f64,

    /// Seconds between two probes of vLLM's /v1/models while it is ready (every 0.5 s
    /// while it is not)
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub health_interval_seconds: f64,

    /// Seconds the store may take to issue a sequence id
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub store_timeout_seconds: f64,

    /// Recorded calls waiting to be exported; beyond it calls are dropped from the record
    /// (and counted)
    #[arg(
        long,
        value_name = "CALLS",
        env = "AGL_VLLM_EXPORT_QUEUE",
        default_value_t = 4096
    )]
    pub export_queue: usize,

    /// Calls per OTLP export request
    #[arg(long, value_name = "CALLS", default_value_t = 64)]
    pub export_batch: usize,

    /// Seconds a call may wait for others to share its export request
    #[arg(long, value_name = "SECONDS", default_value_t = 0.1)]
    pub export_interval_seconds: f64,

    /// Tries per export request (connection errors, 408, 429 and 5xx are retried with
    /// exponential backoff)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub export_attempts: u32,

    /// Seconds one export request may take
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub export_timeout_seconds: f64,

    /// Seconds in-flight calls may run after SIGTERM/SIGINT (the launcher tells vLLM to
    /// stop only after them); new generation calls get 503 meanwhile
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_VLLM_SHUTDOWN_TIMEOUT",
        default_value_t = 30.0
    )]
    pub shutdown_timeout_seconds: f64,

    /// Seconds at shutdown to send the calls still waiting for export
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub flush_timeout_seconds: f64,

    /// Key sent to the store (`Authorization: Bearer KEY`) with every export and sequence-id
    /// request; prefer `--store-key-file`
    #[arg(
        long,
        value_name = "KEY",
        env = "AGL_STORE_KEY",
        hide_env_values = true
    )]
    pub store_key: Option<String>,

    /// File whose first line is the store's key (a mounted Secret)
    #[arg(long, value_name = "FILE", env = "AGL_STORE_KEY_FILE")]
    pub store_key_file: Option<std::path::PathBuf>,

    /// Keys agents must send (the OpenAI clients' `api_key` arrives as `Bearer`); the admin
    /// key guards pause and resume
    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub listen: ListenArgs,

    #[command(flatten)]
    pub tls_client: ClientTlsArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Default for ProxyArgs {
    fn default() -> Self {
        ProxyCli::parse_from(["agl-vllm-proxy"]).args
    }
}

/// When the launcher starts vLLM again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    /// Never: agl-vllm exits with vLLM's status.
    Never,
    /// When vLLM exits with a non-zero status or a signal.
    OnFailure,
    /// Whenever vLLM exits without being asked to.
    Always,
}

/// The launcher's own flags, given as `--agl-<flag>` anywhere on the `agl vllm` command
/// line (or as `AGL_VLLM_*` variables); every other argument goes to vLLM unchanged.
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// The vLLM executable: a name looked up on PATH, or a path
    #[arg(
        long,
        value_name = "PATH",
        env = "AGL_VLLM_BIN",
        default_value = "vllm"
    )]
    pub vllm_bin: String,

    /// Run vLLM alone, without the proxy in front of it
    #[arg(long, env = "AGL_VLLM_NO_PROXY")]
    pub no_proxy: bool,

    /// When to start `vllm serve` again after it exits on its own
    #[arg(long, value_enum, env = "AGL_VLLM_RESTART", default_value_t = RestartPolicy::OnFailure)]
    pub restart: RestartPolicy,

    /// Restarts in a row without vLLM becoming ready before agl-vllm gives up (exiting
    /// with vLLM's status)
    #[arg(
        long,
        value_name = "N",
        env = "AGL_VLLM_MAX_RESTARTS",
        default_value_t = 5
    )]
    pub max_restarts: u32,

    /// Seconds before the first restart; doubled after each failed one
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub restart_delay_seconds: f64,

    /// Longest pause between restarts, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub restart_max_delay_seconds: f64,

    /// Seconds vLLM's process group may take to exit after SIGTERM before it is killed
    /// [default: vLLM's --shutdown-timeout + 15, at least 15]
    #[arg(long, value_name = "SECONDS", env = "AGL_VLLM_KILL_TIMEOUT")]
    pub kill_timeout_seconds: Option<f64>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// `agl-vllm proxy`.
#[derive(Debug, Parser)]
#[command(
    name = "agl-vllm proxy",
    version,
    about = "Token-capturing proxy in front of a running vLLM server (sidecar mode)"
)]
pub struct ProxyCli {
    /// The flags.
    #[command(flatten)]
    pub args: ProxyArgs,
}

/// The launcher's flags, parsed after the `--agl-` prefix is taken off.
#[derive(Debug, Parser)]
#[command(
    name = "agl vllm",
    version,
    about = "Run vLLM with every argument passed through, behind the token-capturing proxy",
    override_usage = "agl vllm [--agl-FLAG ...] [vllm-cli-options]\n       agl-vllm [launch] [--agl-FLAG ...] [vllm-cli-options]\n       agl-vllm proxy [FLAGS]   (sidecar mode; see agl-vllm proxy --help)",
    disable_help_flag = true,
    disable_version_flag = true,
    after_long_help = "Every argument not starting with --agl- goes to vllm unchanged (so --help and \
--version are vLLM's; --agl-help and --agl-version are agl-vllm's). `vllm serve` runs in a \
process group of its own behind the proxy on --agl-port; any other command runs in the \
foreground and agl-vllm exits with its status."
)]
pub struct LaunchCli {
    /// The flags.
    #[command(flatten)]
    pub args: LaunchArgs,
}

/// Seconds as a `Duration`, with negative or non-finite values as zero.
pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

/// Separates the launcher's `--agl-*` flags (wherever they are) from vLLM's arguments,
/// which keep their order and spelling. The flags come back without the prefix, ready for
/// [`LaunchCli`]; a flag that takes a value takes the next argument unless written
/// `--agl-flag=value`.
pub fn split_launch_args(argv: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let command = LaunchCli::command();
    let mut ours = Vec::new();
    let mut vllm = Vec::new();
    let mut iter = argv.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix(AGL_PREFIX) else {
            vllm.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name == "help" || name == "version" {
            ours.push(format!("--{name}"));
            continue;
        }
        let Some(spec) = command.get_arguments().find(|a| a.get_long() == Some(name)) else {
            return Err(format!(
                "unknown flag {AGL_PREFIX}{name} (see {AGL_PREFIX}help; arguments for vllm must not start with {AGL_PREFIX})"
            ));
        };
        ours.push(format!("--{name}"));
        if let Some(value) = inline {
            ours.push(value.to_owned());
        } else if spec.get_action().takes_values() {
            let value = iter
                .next()
                .ok_or_else(|| format!("{AGL_PREFIX}{name} needs a value"))?;
            ours.push(value.clone());
        }
    }
    Ok((ours, vllm))
}

/// The launcher's help, with the flags spelled as they are given (`--agl-port`).
pub fn launch_help() -> String {
    let help = LaunchCli::command().render_long_help().to_string();
    help.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("--") {
                line.replacen("--", AGL_PREFIX, 1)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the launcher needs to know about vLLM's own arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct VllmArgs {
    /// The first argument not starting with `-` (`serve`, `chat`, `bench`, …).
    pub subcommand: Option<String>,
    /// `--port` (vLLM's default 8000).
    pub port: u16,
    /// `--host`, unless absent or empty.
    pub host: Option<String>,
    /// `--api-key`, else `VLLM_API_KEY`, for the readiness probe.
    pub api_key: Option<String>,
    /// `--shutdown-timeout` (vLLM 0.18+), in seconds.
    pub shutdown_timeout: Option<f64>,
    /// `--uds`: vLLM on a Unix socket, which the proxy cannot reach.
    pub uds: bool,
}

impl VllmArgs {
    /// Reads `args` the way vLLM's argparse would: `--flag value` or `--flag=value`, the
    /// last occurrence winning.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let port = match option_value(args, "--port") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("vllm's --port {p:?} is not a port number"))?,
            None => VLLM_DEFAULT_PORT,
        };
        let shutdown_timeout = option_value(args, "--shutdown-timeout")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0);
        Ok(Self {
            subcommand: args.iter().find(|a| !a.starts_with('-')).cloned(),
            port,
            host: option_value(args, "--host").filter(|h| !h.is_empty()),
            api_key: option_value(args, "--api-key")
                .or_else(|| std::env::var("VLLM_API_KEY").ok())
                .filter(|k| !k.is_empty()),
            shutdown_timeout,
            uds: option_value(args, "--uds").is_some(),
        })
    }

    /// Whether this is a long-running server (`vllm serve …`), as opposed to a one-shot
    /// command such as `--version`, `--help`, `chat` or `bench`.
    pub fn is_serve(&self) -> bool {
        self.subcommand.as_deref() == Some("serve")
    }

    /// Where vLLM will answer on this machine: its `--host` (an all-interfaces address
    /// becomes the loopback) and `--port`.
    pub fn local_url(&self) -> String {
        let host = match self.host.as_deref() {
            None | Some("0.0.0.0" | "::" | "[::]") => "127.0.0.1".to_owned(),
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            Some(h) => h.to_owned(),
        };
        format!("http://{host}:{}", self.port)
    }

    /// The address to test for "is the port free": vLLM's `--host` (all interfaces when
    /// absent) and `--port`.
    pub fn bind_addr(&self) -> String {
        let host = match self.host.as_deref() {
            None => "0.0.0.0".to_owned(),
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            Some(h) => h.to_owned(),
        };
        format!("{host}:{}", self.port)
    }
}

fn option_value(args: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            found = iter.next().cloned();
        } else if let Some(v) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(v.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn agl_flags_are_taken_out_wherever_they_are() {
        let argv = strings(&[
            "--agl-port",
            "9000",
            "serve",
            "Qwen/Qwen2.5",
            "--port=8001",
            "--agl-store-url=http://s:4747",
            "--served-model-name",
            "a b",
            "--agl-logprobs",
            "--max-model-len",
            "2048",
        ]);
        let (ours, vllm) = split_launch_args(&argv).unwrap();
        assert_eq!(
            ours,
            strings(&[
                "--port",
                "9000",
                "--store-url",
                "http://s:4747",
                "--logprobs"
            ])
        );
        assert_eq!(
            vllm,
            strings(&[
                "serve",
                "Qwen/Qwen2.5",
                "--port=8001",
                "--served-model-name",
                "a b",
                "--max-model-len",
                "2048"
            ])
        );
        let parsed = LaunchCli::try_parse_from(
            std::iter::once("agl vllm".to_owned()).chain(ours.iter().cloned()),
        )
        .unwrap();
        assert_eq!(parsed.args.proxy.port, 9000);
        assert!(parsed.args.proxy.logprobs);
    }

    #[test]
    fn unknown_or_incomplete_agl_flags_are_refused() {
        assert!(
            split_launch_args(&strings(&["--agl-nope"]))
                .unwrap_err()
                .contains("unknown flag --agl-nope")
        );
        assert!(
            split_launch_args(&strings(&["serve", "--agl-port"]))
                .unwrap_err()
                .contains("needs a value")
        );
        let (ours, _) = split_launch_args(&strings(&["--agl-help"])).unwrap();
        assert_eq!(ours, ["--help"]);
    }

    #[test]
    fn vllm_arguments_are_read_as_argparse_would() {
        let a = VllmArgs::parse(&strings(&[
            "serve",
            "m",
            "--port",
            "8001",
            "--host=0.0.0.0",
        ]))
        .unwrap();
        assert!(a.is_serve());
        assert_eq!(a.port, 8001);
        assert_eq!(a.local_url(), "http://127.0.0.1:8001");
        assert_eq!(a.bind_addr(), "0.0.0.0:8001");
        let b = VllmArgs::parse(&strings(&[
            "serve", "m", "--port", "1", "--port=2", "--host", "::1",
        ]))
        .unwrap();
        assert_eq!(b.port, 2);
        assert_eq!(b.local_url(), "http://[::1]:2");
        let c = VllmArgs::parse(&strings(&["--version"])).unwrap();
        assert!(!c.is_serve());
        assert_eq!(c.port, 8000);
        assert!(VllmArgs::parse(&strings(&["serve", "--port", "x"])).is_err());
        let d = VllmArgs::parse(&strings(&[
            "serve",
            "m",
            "--shutdown-timeout",
            "30",
            "--uds",
            "/s",
        ]))
        .unwrap();
        assert_eq!(d.shutdown_timeout, Some(30.0));
        assert!(d.uds);
    }

    #[test]
    fn help_spells_the_prefixed_flags() {
        let help = launch_help();
        assert!(help.contains("--agl-vllm-bin"), "{help}");
        assert!(help.contains("--agl-store-url"), "{help}");
        assert!(!help.contains("\n      --port"), "{help}");
    }
}
