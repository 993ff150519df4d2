//! `agl-agentops`: the offline AgentOps endpoint on its own (`agl agentops` runs the same).
//!
//! Run with `cargo run -p agl-agentops -- --port 8002`.

use std::process::ExitCode;

use clap::Parser;

/// Start AgentOps server
#[derive(Debug, Parser)]
#[command(name = "agl-agentops", version)]
struct Cli {
    #[command(flatten)]
    args: agl_agentops::AgentopsArgs,
}

fn main() -> ExitCode {
    agl_agentops::run(&Cli::parse().args)
}
