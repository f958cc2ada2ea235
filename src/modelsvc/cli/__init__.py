"""The ``modelsvc`` command line: options in, one library call, a rendered result out.

Commands live in small modules by area (``data``, ``model``, ``ops``); each registers itself on ``app``.
This package never imports ray, torch, feast, mlflow or pyhive: the library does, lazily.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from modelsvc import __version__
from modelsvc.errors import ModelsvcError

app = typer.Typer(
    name="modelsvc",
    help="Take an ML model service through its whole life: ETL, Feast, datasets, training, evaluation, promotion.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)

_state: dict[str, Any] = {"verbose": False}

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="Config directory (base.yaml, model_params.yaml).",
                 envvar="MODELSVC_CONFIG_DIR", show_default=True),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Profile overlay: <config>/profiles/<name>.yaml.", envvar="MODELSVC_PROFILE"),
]
# the inclusive day range of etl and run (modelsvc.timeutil.date_range: both default to yesterday UTC)
StartOpt = Annotated[str | None, typer.Option("--start-date", help="First day, YYYY-MM-DD (default: yesterday UTC).")]
EndOpt = Annotated[str | None, typer.Option("--end-date", help="Last day, inclusive (default: --start-date).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DEFAULT_CONFIG = Path("configs")

T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelsvc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    _state["verbose"] = verbose
    if not verbose:  # libraries' notices are noise in a CLI's stderr (and in cron mail); -v shows them
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While the library runs, whatever third-party code writes to stdout (Ray's worker logs, MLflow's notices)
    goes to stderr: stdout carries only the rendered result, so ``--json`` output always parses."""
    out = sys.stdout
    saved_fd: int | None = None
    try:
        out.flush()
        if out.fileno() == 1:
            saved_fd = os.dup(1)
            os.dup2(sys.stderr.fileno(), 1)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        saved_fd = None  # not a real file descriptor (e.g. a test runner's buffer)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        with suppress(Exception):
            sys.stderr.flush()
        sys.stdout = out
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


@contextmanager
def _no_deprecation_warnings() -> Iterator[None]:
    """Third-party DeprecationWarnings (ibis, SQLAlchemy, Ray Data) are for library authors, not for a CLI's
    users: not shown unless -v. A display hook, because libraries reset the warning filters when imported."""
    if _state["verbose"]:
        yield
        return
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, DeprecationWarning):
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def run(fn: Callable[[], T]) -> T:
    """Call the library; turn a ModelsvcError into ``Error: …`` on stderr and its exit code."""
    try:
        with _stdout_to_stderr(), _no_deprecation_warnings():
            return fn()
    except ModelsvcError as exc:
        if _state["verbose"]:
            import traceback

            traceback.print_exc(file=sys.stderr)
        typer.echo(f"Error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"Hint: {exc.hint}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("Error: interrupted", err=True)
        raise typer.Exit(130) from None


def settings_for(config: Path, profile: str | None = None, **overrides: Any) -> Any:
    """Load settings (inside ``run`` so config errors get their exit code)."""
    from modelsvc.config import load_settings

    return run(lambda: load_settings(config, profile=profile, **overrides))


def reporter(as_json: bool) -> Any:
    from modelsvc.cli.render import RichReporter

    return RichReporter(quiet=as_json)


def main() -> None:
    """Console-script entry point."""
    app()


# register the command modules (import order = order in --help)
from modelsvc.cli import data as _data  # noqa: E402,F401
from modelsvc.cli import features as _features  # noqa: E402,F401
from modelsvc.cli import model as _model  # noqa: E402,F401
from modelsvc.cli import ops as _ops  # noqa: E402,F401
from modelsvc.cli import pipeline as _pipeline  # noqa: E402,F401
from modelsvc.cli import registry as _registry  # noqa: E402,F401
from modelsvc.cli import serve as _serve  # noqa: E402,F401
