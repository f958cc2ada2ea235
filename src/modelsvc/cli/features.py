"""Feature-store commands: materialize, build-dataset."""

from __future__ import annotations
