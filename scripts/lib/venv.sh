# Sourced by the test scripts: `venv DIR REQUIREMENTS` (re)creates the virtualenv DIR from
# the pinned REQUIREMENTS with $PYTHON (default python3), only when the requirements file or
# the interpreter's version changed since DIR was made (a stamp file inside DIR records both).
venv() {
  local dir=$1 requirements=$2 stamp="$1/.agl-stamp" want
  want="$(sha256sum "$requirements" | cut -d' ' -f1) $("${PYTHON:-python3}" -c 'import sys; print(sys.version.split()[0])')"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "creating $dir from $requirements"
  rm -rf "$dir"
  "${PYTHON:-python3}" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
}
