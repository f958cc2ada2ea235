"""The Hive offline store's ``feature_store.yaml`` section, built from :class:`~modelsvc.config.HiveSettings`.

The section's fields are those of ``HiveSettings`` (one list of fields: the store config is that model plus
Feast's ``type``), so ``offline_store_config(settings)`` and ``HiveSectionConfig.hive_settings()`` are
dumps of each other. Feast finds a store class in the module of its config class, by name
(``XConfig`` -> ``X``): the concrete ``HiveOfflineStoreConfig`` is therefore declared beside
``HiveOfflineStore`` in :mod:`modelsvc.features.hive.store`, as this model's subclass.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from feast.repo_config import FeastConfigBaseModel
from pydantic import StrictStr

from modelsvc.config import HiveSettings
from modelsvc.errors import UsageError
from modelsvc.features.names import HIVE_OFFLINE_STORE
from modelsvc.warehouse.hive import HiveWarehouse

if TYPE_CHECKING:
    from modelsvc.config import Settings

PASSWORD_ENV = "MODELSVC_HIVE__PASSWORD"


class HiveSectionConfig(HiveSettings, FeastConfigBaseModel):
    """``offline_store`` section of feature_store.yaml (``type: modelsvc.features.hive.HiveOfflineStore``): the
    fields of ``HiveSettings``.

    ``password`` may be ``${ENV_VAR}``: it is expanded when connecting (modelsvc writes
    ``${MODELSVC_HIVE__PASSWORD}``, never the secret).
    """

    type: StrictStr = HIVE_OFFLINE_STORE

    def hive_settings(self, *, database: str | None = None) -> HiveSettings:
        password = os.path.expandvars(self.password.get_secret_value()) if self.password else None
        if password is not None and password.startswith("${"):
            password = None  # the variable is not set: connect without, the server will say what is missing
        fields = self.model_dump(exclude={"type", "password"})
        return HiveSettings(**{**fields, "database": database or self.database, "password": password})


def offline_store_config(settings: Settings, *, for_file: bool = True) -> dict[str, Any]:
    """The ``offline_store`` section for ``settings.hive``.

    The password is never included as such: with ``for_file`` (the default) it is written as
    ``${MODELSVC_HIVE__PASSWORD}`` (Feast and this store expand it); ``for_file=False`` returns the secret itself
    for an in-memory RepoConfig.
    """
    hive = settings.hive
    config: dict[str, Any] = {"type": HIVE_OFFLINE_STORE, **hive.model_dump(exclude={"password"}, exclude_none=True)}
    if hive.password is not None:
        config["password"] = "${" + PASSWORD_ENV + "}" if for_file else hive.password.get_secret_value()
    return config


def warehouse_for(config: HiveSectionConfig, *, database: str | None = None) -> HiveWarehouse:
    """A Hive client for the store's endpoint (a context manager that closes its connection)."""
    if not isinstance(config, HiveSectionConfig):
        raise UsageError(f"a HiveSource needs offline_store type {HIVE_OFFLINE_STORE}, "
                         f"got {type(config).__name__}")
    return HiveWarehouse(None, hive=config.hive_settings(database=database))
