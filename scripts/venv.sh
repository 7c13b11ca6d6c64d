#!/usr/bin/env bash
# Create (or complete) the project's virtual environment: torch first, pinned, then dlkdd editable.
#
#   scripts/venv.sh PYTHON VENV TORCH_SPEC [EXTRAS]      e.g. python3 .venv torch==2.13.0 test,export
#
# TORCH_SPEC is split into words, so it may carry installer options:
#   "torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
#
# With uv (pip-installed into the venv first, about 4 s) the whole install takes about 45 s on the
# project's 2-core CI machine instead of pip's 100 s: uv downloads and unpacks in parallel. Bytecode
# is compiled at install (--compile-bytecode): where PYTHONDONTWRITEBYTECODE is set, as on CI, every
# process would otherwise recompile what it imports (the suite took 428 s instead of 253 s).
# DLKDD_NO_UV=1, or where uv cannot be installed or fails: plain pip, the same packages.
# pip's find-links (PIP_FIND_LINKS or `pip config`), where a local torch wheel may lie, are given to uv;
# other pip settings (index-url, cert, constraint) are not: uv reads its own (UV_INDEX_URL, ...), and
# where it cannot reach an index it fails and pip, which reads them, installs instead.
# pip itself is installed into the venv too (uv's venv has none), for `.venv/bin/pip install ...`.
# --no-cache: uv leaves no copy of the packages (1.3 GB with torch) in ~/.cache; same speed from a fresh clone.
set -euo pipefail -f
py=$1 venv=$2 torch=$3 extras=${4:-}
target=".${extras:+[$extras]}"
uv_spec=${UV_SPEC:-uv==0.13.9}

with_uv() {
  [ "${DLKDD_NO_UV:-0}" != 1 ] || return 1
  test -x "$venv/bin/uv" || "$py" -m pip --python "$venv/bin/python" install --quiet "$uv_spec" || return 1
  local links uv
  links=${PIP_FIND_LINKS:-$("$py" -m pip config get global.find-links 2>/dev/null || true)}
  uv=("$venv/bin/uv" pip install --quiet --no-cache --compile-bytecode --python "$venv/bin/python")
  for l in $links; do uv+=(--find-links "$l"); done
  # shellcheck disable=SC2086  # TORCH_SPEC: a requirement and options (globbing is off: set -f)
  "${uv[@]}" $torch && "${uv[@]}" pip -e "$target"
}

with_pip() {
  "$venv/bin/python" -m pip --version >/dev/null 2>&1 ||
    "$venv/bin/python" -m ensurepip --upgrade --default-pip >/dev/null
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet $torch
  "$venv/bin/python" -m pip install --quiet -e "$target"
}

test -x "$venv/bin/python" || "$py" -m venv --without-pip "$venv"
with_uv || { [ "${DLKDD_NO_UV:-0}" = 1 ] || echo "venv.sh: uv unavailable or failed; installing with pip" >&2; with_pip; }
