# Shared by scripts/*: create the project's virtual environment and install the project into it, at the versions in
# constraints.txt (the ones the suite last passed with; scripts/lock.py writes it).
# Usage: source scripts/_venv.sh [extras, comma-separated]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDGATE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "fedgate: creating virtual environment in $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
spec="$ROOT"
[ -n "$extras" ] && spec="$ROOT[$extras]"
stamp="$VENV/.fedgate-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
  echo "fedgate: installing $spec (first run takes a few minutes)" >&2
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
         "$VENV/bin/python" -m pip install -c "$ROOT/constraints.txt" -e "$spec"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "fedgate: installing $spec failed; the whole log is in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
