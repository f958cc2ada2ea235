"""Data commands: demo-data, etl, materialize, build-dataset."""

from __future__ import annotations
