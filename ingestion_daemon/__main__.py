"""``python -m ingestion_daemon [--config PATH] [--source NAME ...] [--max-seconds S]``."""

from __future__ import annotations

import argparse
import logging
import sys

from fluxforge.config import ConfigError, load_config
from fluxforge.redact import install_log_redaction, quiet_client_debug, redact
from ingestion_daemon.service import run_daemon


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestion_daemon", description=__doc__)
    parser.add_argument("--config", default=None, help="config file (default: $FLUXFORGE_CONFIG)")
    parser.add_argument("--source", action="append", default=[], help="run only these sources")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()
    quiet_client_debug()
    try:
        cfg = load_config(args.config)
        return run_daemon(cfg, args.source or None, args.max_seconds)
    except ConfigError as exc:
        logging.getLogger("ingestion_daemon").error("%s", redact(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
