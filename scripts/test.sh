#!/usr/bin/env bash
# Install everything and run the whole test suite: scripts/setup.sh, ruff, pytest.
#   ./scripts/test.sh [PYTEST ARGS...]
# Runs as root (through sudo if needed); the integration fixtures drop to the
# unprivileged test users themselves. CI=true makes a skipped integration test fail.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    exec sudo -- bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=/opt/sbx/venv

"$ROOT/scripts/setup.sh"
# A pyfuse3 without sbx's patches, for the test that runs fs/ on a stock one
# (test_fs_semantics.py::test_a_stock_pyfuse3); kept between runs.
bash "$ROOT/scripts/build-pyfuse3.sh" --stock /opt/sbx/pyfuse3-stock "$VENV" | sed 's/^/test: /'
cd "$ROOT"

lint=0
echo "test: ruff check ."
"$VENV/bin/ruff" check . || lint=$?

rc=0
echo "test: $VENV/bin/python -m pytest $*"
"$VENV/bin/python" -m pytest "$@" || rc=$?

# pytest's status wins; a lint failure alone still fails the run.
if ((rc == 0 && lint != 0)); then
    echo "test: ruff check failed (exit $lint)" >&2
    rc=$lint
fi
exit "$rc"
