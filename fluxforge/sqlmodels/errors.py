"""Errors of the SQL project (shared by the loader and the renderer)."""

from __future__ import annotations


class ProjectError(ValueError):
    """The SQL project is invalid; the message names the file (and line) and what is wrong."""


class CycleError(ProjectError):
    """Models reference each other in a cycle; ``cycle`` lists it, first node repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"model reference cycle: {' -> '.join(cycle)}")
