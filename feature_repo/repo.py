"""The objects the ``feast`` CLI finds in this repo (``feast apply`` run in this folder).

Settings come from ``MODELSVC_CONFIG_DIR`` (default ``../configs``); relative state paths are taken from the
folder above this one, as when modelsvc runs there. modelsvc itself does not import this file: it calls
``definitions.build_definitions`` with its own settings.
"""

from pathlib import Path

from definitions import build_definitions

from modelsvc.features import settings_for_repo

user, user_offline_features, user_realtime_features, feature_service = build_definitions(
    settings_for_repo(Path(__file__).resolve().parent)
)
