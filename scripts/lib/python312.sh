# find_python312: prints a Python 3.12 interpreter (agentlightning 1.0 needs one), or fails.
# AGL_PYTHON312 wins; then python3.12 on PATH (a pyenv shim that cannot run is skipped);
# then the newest 3.12 that pyenv has. Sourced by compat.sh and bench.sh.
find_python312() {
  local v p
  if [ -n "${AGL_PYTHON312:-}" ]; then
    echo "$AGL_PYTHON312"
    return 0
  fi
  if p="$(command -v python3.12 2>/dev/null)" && "$p" -c 'import sys' >/dev/null 2>&1; then
    echo "$p"
    return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -t. -k3,3nr); do
      p="$(pyenv root)/versions/$v/bin/python3.12"
      if [ -x "$p" ]; then
        echo "$p"
        return 0
      fi
    done
  fi
  return 1
}
