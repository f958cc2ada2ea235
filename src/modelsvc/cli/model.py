"""Model commands: train, evaluate, promote, rollback."""

from __future__ import annotations
