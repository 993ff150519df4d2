//! `agl-bench`: see the library's documentation and `scripts/bench.sh`.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agl_bench::cli::main(agl_bench::cli::Cli::parse()).await
}
