//! `agl`: one command line for the agl services.
//!
//! `agl store`, `agl agentops` and `agl vllm` parse the product reference's flags here and
//! run the same code as the `agl-store`, `agl-agentops` and `agl-vllm` binaries, whose
//! crates hold the services. `agl server` is the store started the way upstream v1 starts
//! its `agl-server` (`port=… key=…`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Agent Lightning CLI
#[derive(Debug, Parser)]
#[command(
    name = "agl",
    version,
    about,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the vLLM CLI with Agent Lightning instrumentation
    ///
    /// Every argument goes to `vllm` unchanged; `vllm serve` runs behind the
    /// token-capturing proxy. agl's own flags are `--agl-*`, listed by
    /// `agl vllm --agl-help`.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Vllm {
        /// Options passed through to the vLLM CLI
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "vllm-cli-options"
        )]
        args: Vec<String>,
    },
    /// Run a LightningStore server
    Store(agl_store::StoreArgs),
    /// Run the store as upstream v1's agl-server is run: `host=… port=… key=…` (port 8080
    /// unless given); `agl store`'s flags may be mixed in
    #[command(disable_help_flag = true)]
    Server {
        /// Upstream's overrides (`port=8181 key=…`) and `agl store` flags
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "OVERRIDES"
        )]
        args: Vec<String>,
    },
    /// Start AgentOps server
    Agentops(agl_agentops::AgentopsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => run_store(&args),
        Command::Server { args } => match server_args(&args) {
            Ok(args) => run_store(&args),
            Err(code) => code,
        },
        Command::Vllm { args } => agl_vllm::run("agl vllm", &args),
        Command::Agentops(args) => agl_agentops::run(&args),
    }
}

/// `agl store`'s flags, parsed on their own.
#[derive(Debug, Parser)]
#[command(
    name = "agl server",
    about = "Run the store as upstream v1's agl-server is run",
    after_help = "Upstream's settings: host=HOST port=PORT (8080 unless given) key=KEY \
                  default_proxy.model_name=… default_proxy.include_log_probs=… \
                  default_proxy.train.temperature=… default_proxy.val.temperature=…"
)]
struct ServerCli {
    #[command(flatten)]
    args: agl_store::StoreArgs,
}

/// `agl server`'s arguments: upstream's overrides turned into `agl store` flags.
fn server_args(args: &[String]) -> Result<agl_store::StoreArgs, ExitCode> {
    let flags = agl_store::upstream_cli::to_flags(args).map_err(|e| {
        eprintln!("agl server: {e}");
        ExitCode::from(2)
    })?;
    match ServerCli::try_parse_from(std::iter::once("agl server".to_owned()).chain(flags)) {
        Ok(cli) => Ok(cli.args),
        Err(err) => {
            let _ = err.print();
            Err(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)))
        }
    }
}

fn run_store(args: &agl_store::StoreArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agl store: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match agl_common::telemetry::init("agl-store", &args.log, &args.tls_client) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("agl store: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(agl_store::run(args));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agl store: {err:#}");
            ExitCode::FAILURE
        }
    }
}
