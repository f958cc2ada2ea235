"""Prometheus metrics of the service (prometheus-client): one registry per app; with ``modelsvc serve --workers N``
the multiprocess collector over the workers' files (``SERVE_MODELSVC_METRICS_MULTIPROCESS=1`` and
``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``). The variable of our own: importing ``feast.metrics`` sets
``PROMETHEUS_MULTIPROC_DIR`` in every process, so that alone does not mean several workers."""

from __future__ import annotations

import os
from typing import Any

MULTIPROCESS_FLAG = "SERVE_MODELSVC_METRICS_MULTIPROCESS"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = (os.environ.get(MULTIPROCESS_FLAG) == "1"
                             and bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("modelsvc_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=reg)
        self.errors = Counter("modelsvc_request_errors", "HTTP requests answered with a 4xx or 5xx",
                              ["endpoint", "status"], registry=reg)
        self.latency = Histogram("modelsvc_request_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.predictions = Counter("modelsvc_predictions", "predictions returned", registry=reg)
        self.online_read = Histogram("modelsvc_online_read_seconds", "online-store read latency per request",
                                     buckets=LATENCY_BUCKETS, registry=reg)
        self.feature_values = Counter("modelsvc_feature_values", "model feature values looked up", registry=reg)
        self.feature_missing = Counter("modelsvc_feature_values_missing",
                                       "feature values with no fresh online value (imputed by the model)",
                                       registry=reg)
        self.missing_share = Gauge("modelsvc_features_missing_share",
                                   "share of missing feature values since start", registry=reg,
                                   multiprocess_mode="liveall")
        self.model_version = Gauge("modelsvc_model_version_info", "the model version served (value 1)",
                                   ["version", "uri"], registry=reg, multiprocess_mode="liveall")
        self.model_swaps = Counter("modelsvc_model_swaps", "model versions swapped in", registry=reg)
        self.ready = Gauge("modelsvc_ready", "1 when a model is loaded and the online store answers", registry=reg,
                           multiprocess_mode="liveall")
        self._values = 0
        self._missing = 0

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_features(self, values: int, missing: int, read_s: float, predictions: int) -> None:
        self.feature_values.inc(values)
        self.feature_missing.inc(missing)
        self.predictions.inc(predictions)
        self.online_read.observe(read_s)
        self._values += values
        self._missing += missing
        if self._values:
            self.missing_share.set(self._missing / self._values)

    def set_model(self, old: Any, new: Any) -> None:
        if old is not None:
            self.model_version.remove(old.version, old.ref.uri)
            self.model_swaps.inc()
        self.model_version.labels(new.version, new.ref.uri).set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
