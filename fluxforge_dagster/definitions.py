"""The FluxForge code location. Only assembles: every module in defs/ registers its own pieces
from the FluxForge config named by $FLUXFORGE_CONFIG (else config/fluxforge.yaml)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from fluxforge.redact import install_log_redaction

# every log record of the code location's processes (runs included) is masked before Dagster
# stores it in its event log: DSNs and endpoint URLs in library errors carry credentials
install_log_redaction()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
