# Sourced by the Python suites' scripts: `binaries` exports AGL_STORE_BIN, AGL_VLLM_BIN_PATH
# and AGL_AGENTOPS_BIN (default: the debug builds under target/) and stops the script with
# a hint when one is missing.
binaries() {
  export AGL_STORE_BIN="${AGL_STORE_BIN:-$PWD/target/debug/agl-store}"
  export AGL_VLLM_BIN_PATH="${AGL_VLLM_BIN_PATH:-$PWD/target/debug/agl-vllm}"
  export AGL_AGENTOPS_BIN="${AGL_AGENTOPS_BIN:-$PWD/target/debug/agl-agentops}"
  local bin
  for bin in "$AGL_STORE_BIN" "$AGL_VLLM_BIN_PATH" "$AGL_AGENTOPS_BIN"; do
    if [ ! -x "$bin" ]; then
      echo "missing binary $bin: run cargo build -p agl-store -p agl-vllm -p agl-agentops first" >&2
      exit 1
    fi
  done
}
