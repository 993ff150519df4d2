//! `agl-vllm`: the vLLM launcher and token-capturing proxy on its own (`agl vllm` runs the
//! same). `agl-vllm serve MODEL --port 8001` launches vLLM behind the proxy on port 8000;
//! `agl-vllm proxy --upstream URL` runs the proxy alone; `agl-vllm --agl-help` lists the
//! flags.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                eprintln!("agl-vllm: argument {arg:?} is not valid utf-8");
                return ExitCode::from(2);
            }
        }
    }
    agl_vllm::run("agl-vllm", &args)
}
