# Shared by scripts/up and scripts/test: create or reuse .venv and install the pinned
# dependencies (constraints.txt pins the whole tree) when they changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.atom-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
    echo "$want" > "$stamp"
fi
