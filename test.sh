#!/usr/bin/env bash
# Install everything and run the whole test suite (real PostgreSQL and S3-compatible servers are
# started by the tests themselves on free ports, with data in temp dirs).
set -euo pipefail
cd "$(dirname "$0")"
FLUXFORGE_WITH_BROWSER=1 bash scripts/setup.sh
export PATH="$HOME/.local/bin:$PATH"
uv run --frozen ruff check .
uv run --frozen ruff format --check .
exec uv run --frozen pytest "$@"
