"""modelsvc: one toolkit for an ML model service's whole life."""

__version__ = "0.1.0"
