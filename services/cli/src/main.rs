//! `agl`: one command line for the agl services.
//!
//! `agl store`, `agl agentops` and `agl vllm` parse the product reference's flags here and
//! run the same code as the `agl-store`, `agl-agentops` and `agl-vllm` binaries, whose
//! crates hold the services.

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
    /// Start AgentOps server
    Agentops(agl_agentops::AgentopsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => run_store(&args),
        Command::Vllm { args } => agl_vllm::run("agl vllm", &args),
        Command::Agentops(args) => agl_agentops::run(&args),
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
    let telemetry = match agl_common::telemetry::init("agl-store", &args.log) {
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
