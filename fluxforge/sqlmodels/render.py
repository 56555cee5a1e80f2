"""Jinja rendering of the SQL project: models, singular tests and the macros they call.

Templates are rendered with jinja2 the way dbt does it: ``{{ ref('model') }}``,
``{{ source('src', 'table') }}`` and ``{{ config(...) }}`` are callables that record what a model
reads and how it is built, and every ``{% macro %}`` of the project's macro files is a global of
every model and test. Undefined names are errors (StrictUndefined), never empty strings, and every
error names the file and line, plus the macro file and line when it happened inside a macro.

Macros are re-bound for each rendered file, so a ``ref()`` inside a macro is a dependency of the
model that called the macro (the ref() graph stays the dependency graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import FrameType, SimpleNamespace, TracebackType
from typing import Any

import jinja2
import jinja2.runtime

from fluxforge.sqlmodels.errors import ProjectError

# the functions every template gets; a macro may not take one of these names
BUILTINS = ("ref", "source", "config", "exceptions")
# dbt's Jinja extensions: {% do ... %} and {% break %} / {% continue %}
_EXTENSIONS = ("jinja2.ext.do", "jinja2.ext.loopcontrols")


def quote_ident(name: str) -> str:
    """A DuckDB identifier, double-quoted (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def source_relation(source: str, table: str) -> str:
    """Name of the DuckDB view the runner creates for ``source(source, table)``."""
    return f"src__{source}__{table}"


class _CallError(Exception):
    """Bad arguments to a project function; the renderer adds the file and line."""


@dataclass
class Rendered:
    """A rendered file: SQL plus the references and config its ref/source/config calls made."""

    sql: str
    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def ref(self, *args: Any, **kwargs: Any) -> str:
        if len(args) != 1 or kwargs or not isinstance(args[0], str):
            raise _CallError("ref() takes one model name")
        if args[0] not in self.refs:
            self.refs.append(args[0])
        return quote_ident(args[0])

    def source(self, *args: Any, **kwargs: Any) -> str:
        if len(args) != 2 or kwargs or not all(isinstance(a, str) for a in args):
            raise _CallError("source() takes a source and a table name")
        key = (args[0], args[1])
        if key not in self.sources:
            self.sources.append(key)
        return quote_ident(source_relation(*key))

    def set_config(self, *args: Any, **kwargs: Any) -> str:
        if args:
            raise _CallError("config() takes keyword arguments only")
        self.config.update(kwargs)
        return ""


def _raise_compiler_error(message: str) -> None:
    """dbt's ``exceptions.raise_compiler_error``: a macro rejects its arguments."""
    raise _CallError(str(message))


class Renderer:
    """One project's templates: its macro files, then each model / test rendered on demand."""

    def __init__(self) -> None:
        self._sources: dict[str, str] = {}
        self._macro_files: list[str] = []
        self.macros: dict[str, str] = {}  # macro name -> file that defines it
        self.env = jinja2.Environment(
            loader=jinja2.FunctionLoader(self._load),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # SQL, not HTML
            keep_trailing_newline=True,
            extensions=list(_EXTENSIONS),
        )

    def _load(self, name: str) -> tuple[str, str, Any] | None:
        text = self._sources.get(name)
        # the file name is the project-relative path: tracebacks then point into the project
        return None if text is None else (text, name, lambda: True)

    def _template(self, text: str, path: str) -> jinja2.Template:
        self._sources[path] = text
        try:
            return self.env.get_template(path)
        except jinja2.TemplateSyntaxError as exc:
            raise ProjectError(f"{exc.name or path}:{exc.lineno}: {exc.message}") from None

    def add_macros(self, text: str, path: str) -> list[str]:
        """Register a macro file; returns the names it defines."""
        self._template(text, path)
        module = self._modules(self._namespace(Rendered("")), [path])[path]
        names = [n for n, v in vars(module).items() if isinstance(v, jinja2.runtime.Macro)]
        for name in names:
            if name in BUILTINS:
                raise ProjectError(f"{path}: macro {name!r} would hide the built-in {name}()")
            if name in self.macros:
                raise ProjectError(f"{path}: macro {name!r} is also defined in {self.macros[name]}")
            self.macros[name] = path
        self._macro_files.append(path)
        return names

    def _modules(
        self, namespace: dict[str, Any], paths: list[str]
    ) -> dict[str, jinja2.environment.TemplateModule]:
        out = {}
        for path in paths:
            try:
                # shared: the macros look names up in `namespace` when called, so they see the
                # current file's ref/source/config and each other's macros (added by render)
                out[path] = self.env.get_template(path).make_module(namespace, shared=True)
            except Exception as exc:
                raise self._error(exc, path) from exc
        return out

    def _namespace(self, out: Rendered) -> dict[str, Any]:
        """The globals of one rendered file: its own recording ref/source/config."""
        return {
            **self.env.globals,
            "ref": out.ref,
            "source": out.source,
            "config": out.set_config,
            "exceptions": SimpleNamespace(raise_compiler_error=_raise_compiler_error),
        }

    def render(self, text: str, path: str) -> Rendered:
        """Render a model or singular test; the result records its ref/source/config calls."""
        template = self._template(text, path)
        out = Rendered("")
        namespace = self._namespace(out)
        for module in self._modules(namespace, self._macro_files).values():
            namespace.update(
                (n, v) for n, v in vars(module).items() if isinstance(v, jinja2.runtime.Macro)
            )
        try:
            out.sql = template.render(namespace)
        except Exception as exc:
            raise self._error(exc, path) from exc
        return out

    def _error(self, exc: BaseException, path: str) -> ProjectError:
        where = " -> ".join(self._locations(exc.__traceback__)) or path
        if isinstance(exc, jinja2.UndefinedError):
            known = ", ".join(sorted(self.macros)) or "none"
            detail = f"{exc.message}; macros: {known}; functions: ref, source, config"
        elif isinstance(exc, _CallError):
            detail = str(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return ProjectError(f"{where}: {detail}")

    def _locations(self, tb: TracebackType | None) -> list[str]:
        """``file:line`` of each template frame, outermost first (the model, then macros)."""
        out: list[str] = []
        while tb is not None:
            loc = self._location(tb.tb_frame, tb.tb_lineno)
            if loc and (not out or out[-1] != loc):
                out.append(loc)
            tb = tb.tb_next
        return out

    def _location(self, frame: FrameType, lineno: int) -> str | None:
        template = frame.f_globals.get("__jinja_template__")
        if isinstance(template, jinja2.Template) and template.name in self._sources:
            # a frame jinja did not rewrite (a macro file's top level): map the Python line
            return f"{template.name}:{template.get_corresponding_lineno(lineno)}"
        name = frame.f_code.co_filename
        # frames jinja rewrote carry the template's file name and line
        return f"{name}:{lineno}" if name in self._sources else None
