# Sourced by the ops/ scripts: create or update .venv from pyproject.toml, then activate it.
# Re-installs only when pyproject.toml changed since the last install, so repeated runs are fast.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "kalshi-fix-supervisor needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    "$py" -m venv .venv
fi
stamp=.venv/.installed-from
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
