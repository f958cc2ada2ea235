"""The ``modelsvc`` command line: options in, one library call, a rendered result out.

Commands live in small modules by area (``data``, ``model``, ``ops``); each registers itself on ``app``.
This package never imports ray, torch, feast, mlflow or pyhive: the library does, lazily.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer._click import exceptions as click_errors  # Typer vendors its own Click: these are the ones it raises
from typer.core import TyperGroup

from modelsvc import __version__, interrupts
from modelsvc.errors import ModelsvcError, from_os_error

USAGE_EXIT = 64  # EX_USAGE, for a missing / unknown option or a bad value (Click's own is 2)
UNEXPECTED_EXIT = 70  # EX_SOFTWARE: a bug; the traceback goes to a log file


class _Group(TyperGroup):
    """The one place where an invocation ends: every outcome becomes one ``Error: …`` line and an exit status a
    scheduler can act on (see the exit-code table in the README)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        def invoke() -> Any:
            return super(_Group, self).main(args=args, prog_name=prog_name, complete_var=complete_var,
                                            standalone_mode=False, windows_expand_args=windows_expand_args,
                                            **extra)

        _state["interrupt_reported"] = False
        with interrupts.handling():
            code = _invoke(invoke)
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Group,
    name="modelsvc",
    help="Take an ML model service through its whole life: ETL, Feast, datasets, training, evaluation, promotion.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    rich_markup_mode="rich",
)

_state: dict[str, Any] = {"verbose": False, "root": None}

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
        # the variable is read when mlflow is first imported; where it already was (a host process, a test
        # session), its logger is set directly, so "Creating initial MLflow database tables" never reaches stderr
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())


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


def run(fn: Callable[[], T], *, lock: Any = None) -> T:
    """Call the library; turn a ModelsvcError into ``Error: …`` on stderr and its exit code.

    ``lock=settings`` for a command that writes the pipeline's tables: it holds the data root's lock
    (:mod:`modelsvc.runlock`; a second one exits 75 at once, naming the holder)."""
    try:
        with _stdout_to_stderr(), _no_deprecation_warnings():
            if lock is None:
                return fn()
            from modelsvc.runlock import data_root_lock

            with data_root_lock(lock, " ".join(["modelsvc", *sys.argv[1:]])):
                return fn()
    except BaseException as exc:
        raise typer.Exit(_fail(exc)) from None


def _fail(exc: BaseException) -> int:
    """Print the one ``Error:`` line for ``exc`` (with the traceback when -v) and return the exit status."""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    if interrupts.is_interrupt(exc):
        _traceback_if_verbose(exc)
        return _interrupted(exc)
    if isinstance(exc, SystemExit):  # a library's sys.exit: not ours to swallow
        raise exc
    error = exc if isinstance(exc, ModelsvcError) else from_os_error(exc)
    if error is not None:
        _traceback_if_verbose(exc)
        typer.echo(f"Error: {error.message}", err=True)
        if error.hint:
            typer.echo(f"Hint: {error.hint}", err=True)
        return error.exit_code
    if isinstance(exc, click_errors.UsageError):
        typer.echo(f"Error: {_usage_line(exc)}", err=True)
        return USAGE_EXIT
    if isinstance(exc, click_errors.ClickException):
        typer.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    if isinstance(exc, typer.Abort):
        typer.echo("Error: aborted", err=True)
        return 1
    return _unexpected(exc)


def _invoke(fn: Callable[[], Any]) -> int:
    """Run the whole invocation (Click in non-standalone mode) and map whatever escapes to an exit status."""
    try:
        rv = fn()
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message())
        return 0
    except BaseException as exc:
        return _fail(exc)
    if interrupts.received() is not None:  # e.g. Typer turned a KeyboardInterrupt into a silent Exit(130)
        return _interrupted(None)
    return rv if isinstance(rv, int) else 0


def _interrupted(exc: BaseException | None) -> int:
    if not _state.get("interrupt_reported"):
        _state["interrupt_reported"] = True
        interrupts.stop_started_services()
        typer.echo("Error: interrupted", err=True)
    return interrupts.exit_code(exc)


def _usage_line(exc: click_errors.UsageError) -> str:
    message = " ".join(exc.format_message().split())
    ctx = exc.ctx
    return f"{message} (see: {ctx.command_path} --help)" if ctx is not None else message


def _traceback_if_verbose(exc: BaseException) -> None:
    if _state["verbose"]:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def _unexpected(exc: BaseException) -> int:
    """A bug: one line naming where the full traceback went (a log file under the data root); -v prints it."""
    import traceback
    from datetime import datetime, timezone

    text = "".join(traceback.format_exception(exc))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = Path(_state["root"]) if _state["root"] else Path.cwd() / "data"
    where = "stderr"
    for folder in (root / "logs", Path(tempfile.gettempdir()) / "modelsvc-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"modelsvc-{stamp}-{os.getpid()}.log"
            path.write_text(f"modelsvc {__version__} {' '.join(sys.argv)}\n{text}")
            where = str(path)
            break
        except OSError:
            continue
    if _state["verbose"] or where == "stderr":
        sys.stderr.write(text)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    typer.echo(f"Error: unexpected {type(exc).__name__}{': ' + first if first else ''} "
               f"(traceback in {where})", err=True)
    return UNEXPECTED_EXIT


def settings_for(config: Path, profile: str | None = None, **overrides: Any) -> Any:
    """Load settings (inside ``run`` so config errors get their exit code)."""
    from modelsvc.config import load_settings

    settings = run(lambda: load_settings(config, profile=profile, **overrides))
    with suppress(Exception):
        _state["root"] = settings.paths.resolve("state")  # logs/ of unexpected failures
    return settings


def reporter(as_json: bool) -> Any:
    from modelsvc.cli.render import RichReporter

    return RichReporter(quiet=as_json)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # the interpreter's last garbage collections walk every object of torch, Ray, MLflow or Feast: about 1 s
        # at the end of a training (docs/performance.md). Frozen, they are left to the OS; atexit handlers, the
        # flushing of streams and logs still run.
        gc.freeze()


# register the command modules (import order = order in --help)
from modelsvc.cli import data as _data  # noqa: E402,F401
from modelsvc.cli import features as _features  # noqa: E402,F401
from modelsvc.cli import model as _model  # noqa: E402,F401
from modelsvc.cli import ops as _ops  # noqa: E402,F401
from modelsvc.cli import pipeline as _pipeline  # noqa: E402,F401
from modelsvc.cli import registry as _registry  # noqa: E402,F401
from modelsvc.cli import serve as _serve  # noqa: E402,F401
