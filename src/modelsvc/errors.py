"""The one error hierarchy of modelsvc.

Library code raises these; the CLI prints ``Error: <message>`` to stderr and exits with ``exit_code``.
Exit codes follow BSD ``sysexits.h`` where one fits.
"""

from __future__ import annotations


class ModelsvcError(Exception):
    """Base class: an expected failure with a one-line message naming the culprit."""

    exit_code: int = 70  # EX_SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ModelsvcError):
    """Bad command-line input: a bad date, a reversed range, a bad name."""

    exit_code = 64  # EX_USAGE


class DataError(ModelsvcError):
    """Input data breaks its contract (missing column, wrong type, empty day, leakage)."""

    exit_code = 65  # EX_DATAERR


class NotFoundError(ModelsvcError):
    """A table, partition, dataset, run or model that should exist does not."""

    exit_code = 66  # EX_NOINPUT


class ServiceUnavailableError(ModelsvcError):
    """A backend (HiveServer2, Redis, MLflow, Ray) cannot be reached."""

    exit_code = 69  # EX_UNAVAILABLE


class PermissionDeniedError(ModelsvcError):
    """A backend refused our credentials (HTTP 401/403 from the MLflow server)."""

    exit_code = 77  # EX_NOPERM


class MissingDependencyError(ModelsvcError):
    """An optional extra is not installed; the message says which one to install."""

    exit_code = 69


class RetryableError(ModelsvcError):
    """A transient failure: running the same command again may succeed."""

    exit_code = 75  # EX_TEMPFAIL


class ConfigError(ModelsvcError):
    """The configuration is invalid: names the file, the field and the allowed values."""

    exit_code = 78  # EX_CONFIG


class GateRefusedError(ModelsvcError):
    """The evaluation gate refused a candidate, or a promotion was refused."""

    exit_code = 1


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError with an install hint when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"the '{module}' package is required for this backend; install it with: pip install 'modelsvc[{extra}]'"
        )
