"""The one error hierarchy of modelsvc.

Library code raises these; the CLI prints ``Error: <message>`` to stderr and exits with ``exit_code``.
Exit codes follow BSD ``sysexits.h`` where one fits.
"""

from __future__ import annotations

import errno


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


class CannotCreateError(ModelsvcError):
    """An output cannot be created: a file stands where a folder is expected, or the reverse."""

    exit_code = 73  # EX_CANTCREAT


class StorageError(ModelsvcError):
    """Writing or reading local storage failed: the disk is full, a quota is exceeded, an I/O error."""

    exit_code = 74  # EX_IOERR


class ConfigError(ModelsvcError):
    """The configuration is invalid: names the file, the field and the allowed values."""

    exit_code = 78  # EX_CONFIG


class GateRefusedError(ModelsvcError):
    """The evaluation gate refused a candidate, or a promotion was refused."""

    exit_code = 1


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CANNOT_CREATE = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def from_os_error(exc: BaseException) -> ModelsvcError | None:
    """The ModelsvcError for a storage failure (disk full 74, a file where a folder is expected 73), else None.

    Also recognises the same failures inside pyarrow's ``OSError`` messages, which carry no errno."""
    if isinstance(exc, ModelsvcError) or not isinstance(exc, OSError):
        return None
    path = exc.filename or ""
    text = str(exc)
    where = f" ({path})" if path else ""
    code = exc.errno
    if code in _NO_SPACE or "No space left on device" in text or "Disk quota exceeded" in text:
        return StorageError(f"no space left on the device{where}: nothing was published; free space and rerun",
                            hint="the step writes to a temporary folder and publishes it only when complete")
    if code in _CANNOT_CREATE or "Not a directory" in text or "Is a directory" in text or "File exists" in text:
        detail = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
        return CannotCreateError(f"cannot create {path or 'an output'}: {detail}",
                                 hint="a file stands where modelsvc expects a folder (or the reverse); "
                                      "check the paths.* settings")
    if code == errno.EIO:
        return StorageError(f"I/O error{where}: {exc.strerror or text}")
    return None


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError with an install hint when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"the '{module}' package is required for this backend; install it with: pip install 'modelsvc[{extra}]'"
        )
