#!/usr/bin/env bash
# Makes (once) the Python environment the compatibility tests use: the
# reference token library and Hawk client, at pinned versions, in a venv
# outside the clone. Prints the venv's python. Needs PyPI on first run.
set -euo pipefail
venv="${SLUICE_PYENV:-$HOME/.cache/sluice/pyenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import tokenlib, mohawk' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'tokenlib==2.0.0' 'mohawk==1.1.0' >&2
fi
echo "$venv/bin/python"
