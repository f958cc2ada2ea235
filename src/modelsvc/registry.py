"""MLflow registry: promote an evaluated run behind the production alias, and roll back.

Aliases only (stages are gone in MLflow 3). Bookkeeping:

- each promoted version gets the tag ``modelsvc.previous_version`` (the version it replaced, or ``none``): the
  source of truth for ``rollback``, which walks back this chain one step at a time;
- the alias ``previous-<production alias>`` mirrors it for people browsing the registry;
- who, when, why, forced or not, and the evaluation metrics are tags on the version (``modelsvc.promoted_*``,
  ``modelsvc.eval.*``).

Concurrency. MLflow has no compare-and-set on aliases, so promote and rollback hold a lock: a registered model
named ``<model>.modelsvc-lock``, created (atomic create-if-absent, refused with RESOURCE_ALREADY_EXISTS while it
exists) and deleted when done. Under the lock the promotion re-reads production and refuses a candidate that was
evaluated against another production version than the current one (do no harm is judged against what it
replaces). So of two racing promotions of candidates evaluated against the same production, one wins and the other
is refused; the alias always ends on an evaluated version, never half-registered. After moving the alias it is
re-read; a mismatch (a writer that bypassed the lock) is a RetryableError. A lock older than ``LOCK_TTL_S`` is
taken to be left by a crashed process and broken; the guarantee assumes a promotion finishes within that time.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelsvc import tracking
from modelsvc.config import Settings
from modelsvc.errors import DataError, GateRefusedError, NotFoundError, RetryableError, UsageError
from modelsvc.tracking import (
    METRIC_PREFIX,
    NO_PRODUCTION,
    TAG_PRODUCTION_VERSION,
    TAG_VERDICT,
    alias_model_uri,
    alias_version,
    map_tracking_errors,
    mlflow_client,
)

TAG_PREVIOUS_VERSION = "modelsvc.previous_version"
TAG_PROMOTED_BY = "modelsvc.promoted_by"
TAG_PROMOTED_AT = "modelsvc.promoted_at"
TAG_PROMOTION_REASON = "modelsvc.promotion_reason"
TAG_FORCED = "modelsvc.promotion_forced"
TAG_ROLLED_BACK_FROM = "modelsvc.rolled_back_from"
TAG_ROLLED_BACK_BY = "modelsvc.rolled_back_by"
TAG_ROLLED_BACK_AT = "modelsvc.rolled_back_at"
TAG_ROLLBACK_REASON = "modelsvc.rollback_reason"
LOCK_SUFFIX = ".modelsvc-lock"
LOCK_TOKEN_TAG = "modelsvc.lock.token"
LOCK_TTL_S = 300.0
LOCK_WAIT_S = 60.0
NO_VERSION = "none"
_RUN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
# MLmodel keys (any flavor) that name a file or folder inside the model directory
_PATH_KEYS = {"python_model", "data", "model_data", "pickled_model", "model_path", "code"}


class Promotion(BaseModel):
    """The result of ``promote`` and ``rollback``: where the alias points now and what it replaced."""

    action: Literal["promote", "rollback"]
    registered_model: str
    alias: str
    model_uri: str = Field(description="models:/<name>@<alias>")
    version: str = Field(description="the version the alias points at now")
    run_id: str | None
    previous_version: str | None = Field(description="the version the alias pointed at before (None: none)")
    changed: bool = Field(description="False when the alias already pointed at this version (no-op)")
    forced: bool = False
    reason: str | None = None
    actor: str
    at: datetime
    verdict: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="the run's eval_* metrics")
    files: list[str] = Field(default_factory=list, description="model artifact files checked before the move")


def previous_alias(settings: Settings) -> str:
    return f"previous-{settings.mlflow.production_alias}"


@map_tracking_errors
def promote(settings: Settings, *, run_id: str, force: bool = False, reason: str | None = None,
            actor: str | None = None) -> Promotion:
    """Register run ``run_id``'s model (once) and move the production alias to it.

    Refused (GateRefusedError) unless the run has a passed evaluation against the current production version, or
    ``force`` with a ``reason``. Promoting the version that is already in production is a no-op.
    """
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason TEXT (say why the gate is bypassed)")
    if not _RUN_ID.match(run_id or ""):
        raise UsageError(f"--run-id {run_id!r} is not an MLflow run id")
    client = mlflow_client(settings)
    name, alias = settings.mlflow.registered_model, settings.mlflow.production_alias
    who = actor or _default_actor()
    run = tracking.get_run(client, run_id)
    _refuse_unless_passed(run, force)

    with promotion_lock(client, name):
        run = tracking.get_run(client, run_id)  # re-read under the lock: an evaluation may have just finished
        _refuse_unless_passed(run, force)
        verdict = run.data.tags.get(TAG_VERDICT)
        metrics = tracking.run_metrics(client, run_id)
        tracking.create_registered_model(client, name,
                                         description="CTR model served by modelsvc (production alias)")
        current = alias_version(client, name, alias)
        existing = tracking.find_version(client, name, run_id)
        base: dict[str, Any] = dict(
            action="promote", registered_model=name, alias=alias, model_uri=alias_model_uri(name, alias), run_id=run_id,
            forced=force, reason=reason, actor=who, at=datetime.now(timezone.utc), verdict=verdict, metrics=metrics)
        if current is not None and existing is not None and str(current.version) == str(existing.version):
            return Promotion(**base, version=str(existing.version), changed=False,
                             previous_version=_none(current.tags.get(TAG_PREVIOUS_VERSION)))
        now = NO_PRODUCTION if current is None else str(current.version)
        against = run.data.tags.get(TAG_PRODUCTION_VERSION)
        if not force and against != now:
            raise GateRefusedError(
                f"run {run_id} was evaluated against production version {against} but production is now "
                f"version {now}; evaluate it again: modelsvc evaluate --run-id {run_id}")
        version = str((existing or tracking.register_model(name, run_id)).version)
        files = verify_model_artifact(name, version)

        tags = {
            TAG_PREVIOUS_VERSION: NO_VERSION if current is None else str(current.version),
            TAG_PROMOTED_BY: who,
            TAG_PROMOTED_AT: base["at"].isoformat(),
            TAG_PROMOTION_REASON: reason or "",
            TAG_FORCED: str(force).lower(),
            TAG_VERDICT: verdict or NO_VERSION,
            **{f"modelsvc.eval.{k[len(METRIC_PREFIX):]}": repr(v) for k, v in metrics.items()},
        }
        for key, value in tags.items():  # bookkeeping first: rollback can rely on it once the alias moves
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, alias, version)
        if current is not None:
            client.set_registered_model_alias(name, previous_alias(settings), str(current.version))
        else:
            tracking.delete_alias(client, name, previous_alias(settings))
        _verify_alias(client, name, alias, version)
    return Promotion(**base, version=version, previous_version=None if current is None else str(current.version),
                     changed=True, files=files)


@map_tracking_errors
def rollback(settings: Settings, *, reason: str | None = None, actor: str | None = None) -> Promotion:
    """Move the production alias back to the version the current one replaced (recorded on both versions)."""
    client = mlflow_client(settings)
    name, alias = settings.mlflow.registered_model, settings.mlflow.production_alias
    who = actor or _default_actor()
    with promotion_lock(client, name):
        current = alias_version(client, name, alias)
        if current is None:
            raise NotFoundError(f"registered model '{name}' has no '{alias}' alias: nothing to roll back")
        prev = current.tags.get(TAG_PREVIOUS_VERSION)
        if not prev or prev == NO_VERSION:
            raise NotFoundError(f"nothing to roll back to: version {current.version} of '{name}' replaced no "
                                "earlier version")
        target = tracking.get_version(client, name, prev)
        metrics = tracking.run_metrics(client, target.run_id)
        files = verify_model_artifact(name, prev)
        at = datetime.now(timezone.utc)
        for key, value in {TAG_ROLLED_BACK_FROM: str(current.version), TAG_ROLLED_BACK_BY: who,
                           TAG_ROLLED_BACK_AT: at.isoformat(), TAG_ROLLBACK_REASON: reason or ""}.items():
            client.set_model_version_tag(name, prev, key, value)
        client.set_model_version_tag(name, str(current.version), TAG_ROLLED_BACK_AT, at.isoformat())
        client.set_registered_model_alias(name, alias, prev)
        earlier = target.tags.get(TAG_PREVIOUS_VERSION)
        if earlier and earlier != NO_VERSION:
            client.set_registered_model_alias(name, previous_alias(settings), earlier)
        else:
            tracking.delete_alias(client, name, previous_alias(settings))
        _verify_alias(client, name, alias, prev)
    return Promotion(action="rollback", registered_model=name, alias=alias, model_uri=alias_model_uri(name, alias),
                     version=prev, run_id=target.run_id, previous_version=str(current.version), changed=True,
                     reason=reason, actor=who, at=at, verdict=target.tags.get(TAG_VERDICT),
                     metrics=metrics, files=files)


# -- helpers ---------------------------------------------------------------------------------------------------

def _refuse_unless_passed(run: Any, force: bool) -> None:
    verdict = run.data.tags.get(TAG_VERDICT)
    if verdict == "passed" or force:
        return
    run_id = run.info.run_id
    state = "has no evaluation" if verdict is None else f"has a '{verdict}' evaluation verdict"
    raise GateRefusedError(
        f"run {run_id} {state}; promote needs a passed evaluation",
        hint=f"modelsvc evaluate --run-id {run_id}, or modelsvc promote --run-id {run_id} --force --reason TEXT",
    )


def _default_actor() -> str:
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "unknown"


def _none(v: str | None) -> str | None:
    return None if not v or v == NO_VERSION else v


def _verify_alias(client: Any, name: str, alias: str, version: str) -> None:
    after = alias_version(client, name, alias)
    if after is None or str(after.version) != version:
        now = "nothing" if after is None else f"version {after.version}"
        raise RetryableError(f"alias '{alias}' of '{name}' was moved concurrently to {now} (expected {version})")


def _declared_paths(flavors: dict[str, Any]) -> list[str]:
    paths: list[str] = []
    for conf in flavors.values():
        if not isinstance(conf, dict):
            continue
        paths += [v for k, v in conf.items() if k in _PATH_KEYS and isinstance(v, str) and v]
        env = conf.get("env")
        if isinstance(env, dict):
            paths += [v for v in env.values() if isinstance(v, str) and v]
        artifacts = conf.get("artifacts")
        if isinstance(artifacts, dict):
            paths += [a["path"] for a in artifacts.values() if isinstance(a, dict) and isinstance(a.get("path"), str)]
    return sorted(set(paths))


def verify_model_artifact(name: str, version: str) -> list[str]:
    """Check that version ``version`` of ``name`` has an MLmodel with a pyfunc flavor and every file it declares.

    Returns the model's file listing; DataError naming the missing files otherwise.
    """
    uri = tracking.version_model_uri(name, version)
    mlmodel = tracking.read_mlmodel(uri)
    flavors = mlmodel.get("flavors") or {}
    if "python_function" not in flavors:
        raise DataError(f"model {uri} has no python_function flavor (flavors: {sorted(flavors)})")
    files = tracking.list_artifact_files(uri)
    missing = []
    for declared in _declared_paths(flavors):
        d = declared.rstrip("/")
        hits = {f: s for f, s in files.items() if f == d or f.startswith(d + "/")}
        if not hits or (d in hits and hits[d] == 0):
            missing.append(declared)
    if missing:
        raise DataError(f"model {uri} is incomplete: missing or empty {', '.join(missing)}")
    return sorted(files)


@contextmanager
def promotion_lock(client: Any, name: str, *, wait_s: float = LOCK_WAIT_S, ttl_s: float = LOCK_TTL_S) -> Iterator[str]:
    """Hold the registry lock of ``name`` (see the module docstring); yields this holder's token."""
    lock = f"{name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    holder = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        if tracking.create_registered_model(client, lock, tags={LOCK_TOKEN_TAG: token},
                                            description="modelsvc promotion lock: " + json.dumps(holder)):
            break
        if _inspect_lock(client, lock, token, ttl_s):
            break  # our own create went through although the call failed (a retried request)
        if time.monotonic() > deadline:
            raise RetryableError(f"another promotion holds the registry lock '{lock}' (waited {wait_s:.0f}s)",
                                 hint=f"if no promotion is running, delete the registered model '{lock}'")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 1.0)
    try:
        yield token
    finally:
        held = tracking.registered_model_tags(client, lock)
        if held is not None and held[0].get(LOCK_TOKEN_TAG) == token:
            tracking.delete_registered_model(client, lock)


def _inspect_lock(client: Any, lock: str, token: str, ttl_s: float) -> bool:
    """True when the lock holds ``token``; deletes a lock older than ``ttl_s`` (left by a crashed process)."""
    held = tracking.registered_model_tags(client, lock)
    if held is None:
        return False
    tags, created_ms = held
    if tags.get(LOCK_TOKEN_TAG) == token:
        return True
    if time.time() - created_ms / 1000.0 > ttl_s:
        tracking.delete_registered_model(client, lock)
    return False


# -- [ops] incremental runs ------------------------------------------------------------------------------------
@map_tracking_errors
def production_run_id(settings: Settings) -> str | None:
    """The run id of the version the production alias points at (None without one): ``run`` skips evaluate and
    promote of a training that is already in production."""
    current = tracking.production_version(settings)
    return str(current.run_id) if current is not None and current.run_id else None
