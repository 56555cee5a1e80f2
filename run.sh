#!/usr/bin/env bash
# Install everything and run FluxForge on the embedded default configuration.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$HOME/.local/bin:$PATH"
exec uv run --frozen fluxforge up "$@"
