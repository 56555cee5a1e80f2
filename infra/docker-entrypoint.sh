#!/bin/sh
# Container entrypoint: one image, one role per container.
#   ingest [ARGS]       the ingestion daemon (fluxforge ingest)
#   webserver           Dagster UI + GraphQL on $DAGSTER_WEBSERVER_HOST:$DAGSTER_WEBSERVER_PORT
#   daemon              dagster-daemon (sensors, schedules, run queue, run monitoring)
#   code-server         the FluxForge code location as a gRPC server (k8s user deployment)
#   fluxforge ARGS      any fluxforge command (process, rotate, tier, query, status)
#   anything else       executed as given
# Inside a container the servers listen on 0.0.0.0 so the published port works; which host
# address they are reachable on is decided where the port is published (compose binds 127.0.0.1).
set -eu

CODE_MODULE="${DAGSTER_CODE_MODULE:-fluxforge_dagster.definitions}"
# The repository's workspace.yaml (code location "fluxforge"); the k8s chart uses its own.
WORKSPACE="${DAGSTER_WORKSPACE:-/app/workspace.yaml}"

# numba's cache starts as the one compiled into the image (infra/Dockerfile, `fluxforge
# compile`), copied once into $NUMBA_CACHE_DIR (writable: /tmp). Without it a process
# compiles every kernel at its first segment; a failed copy only costs that, so it is a warning.
seed="${FLUXFORGE_NUMBA_SEED:-/app/.numba-cache}"
if [ -n "${NUMBA_CACHE_DIR:-}" ] && [ -d "$seed" ] && [ ! -e "$NUMBA_CACHE_DIR/.seeded" ]; then
  if mkdir -p "$NUMBA_CACHE_DIR" && cp -R "$seed/." "$NUMBA_CACHE_DIR/"; then
    touch "$NUMBA_CACHE_DIR/.seeded"
  else
    echo "warning: could not copy numba's cache from $seed to $NUMBA_CACHE_DIR" >&2
  fi
fi

case "${1:-ingest}" in
  ingest)
    shift || true
    exec fluxforge ingest "$@"
    ;;
  webserver)
    shift
    exec dagster-webserver \
      -h "${DAGSTER_WEBSERVER_HOST:-0.0.0.0}" -p "${DAGSTER_WEBSERVER_PORT:-3000}" \
      -w "$WORKSPACE" "$@"
    ;;
  daemon)
    shift
    exec dagster-daemon run -w "$WORKSPACE" "$@"
    ;;
  code-server)
    shift
    exec dagster code-server start \
      -h "${DAGSTER_CODE_SERVER_HOST:-0.0.0.0}" -p "${DAGSTER_CODE_SERVER_PORT:-4000}" \
      -m "$CODE_MODULE" "$@"
    ;;
  fluxforge)
    shift
    exec fluxforge "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
