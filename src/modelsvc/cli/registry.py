"""Evaluation and registry commands: evaluate, promote, rollback."""

from __future__ import annotations
