"""Figures recorded by the reliability tests (one module object, whatever name pytest gives the
conftest): printed when recorded, summarised at the end of the session."""

from __future__ import annotations

import json
from typing import Any

FIGURES: dict[str, dict[str, Any]] = {}


def record_figures(name: str, values: dict[str, Any]) -> None:
    FIGURES[name] = values
    print(f"\nRELIABILITY {name}: {json.dumps(values, sort_keys=True)}")
