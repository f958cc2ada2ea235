"""Locations: a local folder or an object-store URI, behind one API (``pyarrow.fs``).

Every location setting (``paths.root``, ``paths.datasets``, ``paths.reports``, ``ray.storage_path``, the Feast
registry) is a *location*: a local path, ``file://…``, ``s3://bucket/prefix`` (``AWS_ENDPOINT_URL`` for MinIO,
Ceph or any S3-compatible store), ``gs://…`` or ``hdfs://…``. This module is the one place that turns a location
into a filesystem and reads, writes, lists and deletes under it; nothing else in the package uses ``Path`` or
``open`` for these locations.

Object stores have no rename: a multi-file output (a dataset version) becomes visible by writing its marker file
last (``write_bytes``), and readers look for the marker. On a local disk ``write_bytes`` is atomic too (a
temporary file renamed into place).

Credentials come from the standard variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, instance roles); they are never printed (``display`` drops any user info
of a URI). Failures become one-line errors: endpoint unreachable 69, credentials refused 77, bucket missing 66.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from modelsvc.errors import (
    ModelsvcError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    StorageError,
    from_os_error,
)

if TYPE_CHECKING:
    import pyarrow.fs as pafs

SCHEMES = ("s3", "gs", "gcs", "hdfs", "file")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_lock = threading.Lock()
_filesystems: dict[tuple[str, str, str], pafs.FileSystem] = {}


def scheme(location: str | os.PathLike[str]) -> str:
    """``'s3'``, ``'gs'``, ``'hdfs'``, ``'file'`` … for a URI; ``''`` for a plain local path."""
    m = _URI.match(str(location))
    return m.group(1).lower() if m else ""


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for a remote location (object store, HDFS); ``file://`` and plain paths are local."""
    return scheme(location) not in ("", "file")


def check_location(location: str, *, setting: str) -> str:
    """``location`` if its scheme is one modelsvc supports, else a ConfigError (78) naming ``setting``."""
    from modelsvc.errors import ConfigError

    s = scheme(location)
    if s and s not in SCHEMES:
        raise ConfigError(f"{setting}: unsupported URI scheme '{s}://' in {display(location)} "
                          f"(use a local path, file://, s3://, gs:// or hdfs://)")
    if s and s != "file" and not urlsplit(str(location)).netloc:
        raise ConfigError(f"{setting}: {display(location)} names no bucket or host")
    return location


def local_path(location: str | os.PathLike[str]) -> Path | None:
    """The local ``Path`` of a plain path or ``file://`` URI; None for a remote location."""
    text = str(location)
    s = scheme(text)
    if s == "":
        return Path(text)
    if s == "file":
        return Path(urlsplit(text).path)
    return None


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base`` and ``parts`` joined with ``/`` (a URI stays a URI; a local path stays a local path)."""
    text = str(base)
    local = local_path(text)  # a file:// URI becomes its path (Path would fold 'file:///a' into 'file:/a')
    if local is not None:
        return str(local.joinpath(*parts))
    out = text.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def display(location: str | os.PathLike[str]) -> str:
    """``location`` safe to print: a URI loses any ``user:password@`` part and its query."""
    text = str(location)
    if not is_uri(text):
        return text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if not host:  # urlunsplit would drop the '//' of 's3:///x'
        return f"{parts.scheme}://{parts.path}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def filesystem(location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``location`` and the path inside it (filesystems are cached per bucket)."""
    import pyarrow.fs as pafs

    text = str(location)
    path = local_path(text)
    if path is not None:
        return pafs.LocalFileSystem(), str(path.absolute())
    parts = urlsplit(text)
    # one filesystem per store, endpoint and access key (a changed key in the environment gets a new one)
    key = (parts.scheme.lower(), parts.netloc,
           f"{os.environ.get('AWS_ENDPOINT_URL', '')}|{os.environ.get('AWS_ACCESS_KEY_ID', '')}")
    inner = (parts.path.rstrip("/") or "/") if key[0] == "hdfs" else f"{parts.netloc}{parts.path}".rstrip("/")
    with _lock:
        fs = _filesystems.get(key)
    if fs is None:
        with errors(text):
            fs, inner = _from_uri(text, parts.scheme.lower())
        with _lock:
            _filesystems[key] = fs
    return fs, inner


def _from_uri(text: str, kind: str) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    if kind == "s3":
        # bounded retries and timeouts: an unreachable endpoint is one clear line (69) in seconds, not minutes
        parts = urlsplit(text)
        options: dict[str, object] = {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
            "connect_timeout": 5.0,
            "request_timeout": 60.0,
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            options["endpoint_override"] = endpoint
            options["scheme"] = urlsplit(endpoint).scheme or "https"
            # S3-compatible stores (MinIO, Ceph, moto) are addressed by path and have one region
            options["force_virtual_addressing"] = False
            options["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        elif os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            options["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return pafs.S3FileSystem(**options), f"{parts.netloc}{parts.path}".rstrip("/")  # type: ignore[arg-type]
    return pafs.FileSystem.from_uri(text)  # type: ignore[no-any-return]


def require_bucket(location: str | os.PathLike[str], *, setting: str) -> None:
    """On an object store, check that ``location``'s bucket exists and takes our credentials: a NotFoundError
    (66) naming ``setting`` when it is missing, 77 refused, 69 unreachable. A no-op for local paths and HDFS."""
    import pyarrow.fs as pafs

    if scheme(location) not in ("s3", "gs", "gcs"):
        return
    fs, inner = filesystem(location)
    try:  # the location itself first: what credentials limited to a prefix may read
        with errors(location):
            if fs.get_file_info(inner).type != pafs.FileType.NotFound:
                return
    except NotFoundError:  # the store said the bucket is missing: said below, naming the setting
        pass
    bucket = inner.split("/", 1)[0]
    try:  # nothing there yet: a missing bucket (66), or only an empty prefix
        with errors(location):
            missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except PermissionDeniedError:  # may not look at the bucket itself (s3:ListBucket on a prefix only): the
        return  # location's own reads and writes will say whether they are allowed
    if missing:
        raise NotFoundError(f"bucket '{bucket}' of {setting} does not exist ({display(location)})")


def clear_cache() -> None:
    """Forget the cached filesystems (after the credentials or the endpoint changed, in tests)."""
    with _lock:
        _filesystems.clear()


# -- operations ------------------------------------------------------------------------------------------------


def exists(location: str | os.PathLike[str]) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    with errors(location):
        return fs.get_file_info(path).type != pafs.FileType.NotFound  # type: ignore[no-any-return]


def is_file(location: str | os.PathLike[str]) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    with errors(location):
        return fs.get_file_info(path).type == pafs.FileType.File  # type: ignore[no-any-return]


def list_dir(location: str | os.PathLike[str]) -> list[str]:
    """The names directly under ``location`` (files and folders), sorted; [] when it does not exist."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    with errors(location):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(info.base_name for info in infos)


def list_files(location: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """Every file under ``location`` (recursively) as (path relative to it, size), sorted; [] when missing."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    with errors(location):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    prefix = path.rstrip("/") + "/"
    return sorted((info.path[len(prefix):], int(info.size or 0)) for info in infos
                  if info.type == pafs.FileType.File)


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    fs, path = filesystem(location)
    with errors(location), fs.open_input_stream(path) as f:
        return f.read()  # type: ignore[no-any-return]


def read_text(location: str | os.PathLike[str]) -> str:
    return read_bytes(location).decode("utf-8")


def makedirs(location: str | os.PathLike[str]) -> None:
    """Create the folder (a no-op on object stores, whose folders are key prefixes)."""
    fs, path = filesystem(location)
    with errors(location):
        fs.create_dir(path, recursive=True)


def write_bytes(location: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` as one object: readers see the old content or the new, never a part.

    Locally a temporary file beside it is renamed into place; an object store's PUT is atomic."""
    local = local_path(location)
    if local is not None:
        with errors(location):
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, local)
            finally:
                tmp.unlink(missing_ok=True)
        return
    fs, path = filesystem(location)
    with errors(location), fs.open_output_stream(path) as f:
        f.write(data)


def write_text(location: str | os.PathLike[str], text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


@contextlib.contextmanager
def open_output(location: str | os.PathLike[str]) -> Iterator[object]:
    """A writable binary stream to ``location`` (parents created); on an object store the object appears at close."""
    fs, path = filesystem(location)
    with errors(location):
        local = local_path(location)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_output_stream(path) as f:
            yield f


def delete(location: str | os.PathLike[str]) -> None:
    """Remove a file or a whole folder; a missing one is no error."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    with errors(location):
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)


# -- errors ----------------------------------------------------------------------------------------------------

_UNREACHABLE = ("NETWORK_CONNECTION", "Could not connect", "Couldn't connect", "Connection refused",
                "Could not resolve host", "Name or service not known", "Timeout was reached", "timed out",
                "curlCode: 6", "curlCode: 7", "curlCode: 28")
_REFUSED = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId",
            "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "Forbidden", "HTTP response code: 403",
            "InvalidToken", "ExpiredToken", "UNRECOGNIZED_CLIENT", "No response body.")
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "The specified bucket does not exist", "Bucket '")


def translate(exc: BaseException, location: str | os.PathLike[str]) -> ModelsvcError | None:
    """The one-line ModelsvcError for a storage failure at ``location``, or None when it is not one."""
    if isinstance(exc, ModelsvcError):
        return exc
    where = display(location)
    if not is_uri(location):
        return from_os_error(exc)
    if not isinstance(exc, OSError):
        return None
    text = " ".join(str(exc).split())
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or ""
    at = f" at {display(endpoint)}" if endpoint else ""
    if any(marker in text for marker in _NO_BUCKET) and "does not exist" in text:
        bucket = urlsplit(str(location)).hostname or ""
        return NotFoundError(f"bucket '{bucket}' does not exist{at} ({where})")
    if any(marker in text for marker in _UNREACHABLE):
        return ServiceUnavailableError(f"object store unreachable{at or ' (' + scheme(location) + ')'}: "
                                       f"cannot reach {where}")
    if any(marker in text for marker in _REFUSED):
        return PermissionDeniedError(f"object store refused the credentials for {where} "
                                     f"(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance role)")
    if isinstance(exc, FileNotFoundError):
        bucket = urlsplit(str(location)).hostname or ""
        if scheme(location) in ("s3", "gs", "gcs") and bucket and not _bucket_exists(str(location), bucket):
            return NotFoundError(f"bucket '{bucket}' does not exist{at} ({where})")
        return NotFoundError(f"{where} does not exist")
    first = text.split(". Detail:")[0][:300]
    return StorageError(f"object store error at {where}: {first}")


def _bucket_exists(location: str, bucket: str) -> bool:
    import pyarrow.fs as pafs

    try:
        fs, _ = filesystem(location)
        return fs.get_file_info(bucket).type != pafs.FileType.NotFound  # type: ignore[no-any-return]
    except Exception:  # the original error is the one to report
        return True


@contextlib.contextmanager
def errors(location: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a storage failure inside the block into its one-line ModelsvcError (69, 77, 66, 73, 74)."""
    try:
        yield
    except ModelsvcError:
        raise
    except OSError as exc:
        mapped = translate(exc, location)
        if mapped is None:
            raise
        raise mapped from None
