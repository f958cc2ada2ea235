"""Rendering helpers shared by the commands: rich tables on stderr-free stdout, or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(result: BaseModel | Mapping[str, Any] | list[Any]) -> None:
    """Write a result as JSON on stdout (nothing else goes to stdout with --json)."""
    if isinstance(result, BaseModel):
        text = result.model_dump_json(indent=2)
    else:
        text = json.dumps(result, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in rows:
        table.add_row(str(k), _fmt(v))
    return table


def rows_table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._p = progress
        self._id = task_id

    def advance(self, amount: float = 1, **info: Any) -> None:
        self._p.update(self._id, advance=amount, info=_info(info))

    def update(self, *, completed: float | None = None, total: float | None = None, **info: Any) -> None:
        kwargs: dict[str, Any] = {"info": _info(info)}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._p.update(self._id, **kwargs)


def _info(info: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())


class RichReporter:
    """Progress bars on stderr (so --json stdout stays clean) when stderr is a terminal; log lines on stderr
    unless quiet, time-stamped (UTC) when stderr is not a terminal, e.g. in a cron or CI log."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bars = not quiet and err_console.is_terminal

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        from modelsvc.progress import _NullTask

        if not self.bars:
            yield _NullTask()
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        with progress:
            tid = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, tid)

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if err_console.is_terminal:
            err_console.print(message)
        else:
            from datetime import datetime, timezone

            from rich.text import Text

            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            sys.stderr.write(f"{stamp} {Text.from_markup(message).plain}\n")
            sys.stderr.flush()


# -- one renderer per result: the commands call show(result, as_json) ------------------------------------------
# Dispatch on the result's class name, so this module imports none of the library's (heavy) modules.


def show(result: Any, as_json: bool) -> None:
    """Print a command's result: JSON on stdout with ``--json``, else its tables."""
    if as_json:
        emit_json(_JSON.get(type(result).__name__, lambda r: r)(result))
        return
    _TABLES[type(result).__name__](result)


def brief(summary: Mapping[str, Any], most: int = 4) -> str:
    """A step summary in one line: its first scalar values, floats rounded."""
    keys = [k for k in summary if not isinstance(summary[k], (dict, list))][:most]
    return ", ".join(f"{k}={_fmt(summary[k])}" for k in keys)


def _demo_data(r: Any) -> None:
    console.print(kv_table("Demo data", [
        ("days", f"{r.start_date} .. {r.end_date} ({r.days})"),
        ("users", r.users),
        ("events", r.events),
        ("page views / orders / impressions", f"{r.page_views} / {r.orders} / {r.impressions}"),
        ("click rate", r.click_rate),
        ("oracle AUC", r.oracle_auc),
        ("feature coverage (offline / realtime)",
         f"{r.offline_feature_coverage:.1%} / {r.realtime_feature_coverage:.1%}"),
        *((f"rows in {table}", rows) for table, rows in r.tables.items()),
        ("seconds", r.seconds),
    ]))


def _etl(r: Any) -> None:
    console.print(kv_table("ETL", [
        ("days", f"{r.start_date} .. {r.end_date} ({r.days})"),
        ("engine", r.engine),
        ("raw events read", f"{r.raw_events_read} (partitions from {r.raw_start})"),
        *((f"rows in {table}", rows) for table, rows in r.rows_written.items()),
        ("seconds", r.seconds),
        ("events/s", round(r.events_per_s)),
    ]))


def _materialize(r: Any) -> None:
    console.print(rows_table(
        f"Materialized into {r.online_store} up to {r.end:%Y-%m-%d %H:%M:%S}",
        ["feature view", "table", "from", "rows", "seconds"],
        ((v.view, v.table, "up to date" if v.skipped else v.start, v.rows, v.seconds) for v in r.views),
    ))
    console.print(f"definitions {'applied' if r.applied else 'unchanged'}   total rows: {r.rows}   "
                  f"{r.seconds:.1f}s")


def _dataset(m: Any) -> None:
    console.print(rows_table(
        f"Dataset {m.name}/{m.version}", ["split", "rows", "label rate", "from", "to"],
        ((s, st.rows, st.label_rate, st.start, st.end) for s, st in m.splits.items()),
    ))
    console.print(kv_table("Manifest", [
        ("rows", m.rows),
        ("label rate", m.label_rate),
        *((f"null rate {f}", rate) for f, rate in m.null_rate.items()),
    ]))
    from modelsvc.storage import display

    console.print(f"path: {display(m.path)} ({len(m.files) or 1} files)\nfingerprint: {m.fingerprint}",
                  soft_wrap=True)


def _datasets(r: Any) -> None:
    console.print(rows_table(
        f"Datasets under {r.location} ({len(r.versions)} versions)",
        ["name", "version", "days", "rows", "files", "fingerprint"],
        ((v.name, v.version, f"{v.start_date}..{v.end_date}", v.rows, v.files, v.fingerprint[:12])
         for v in r.versions),
    ))


def _train(r: Any) -> None:
    console.print(rows_table(
        "Epochs", ["epoch", "train_loss", "val_loss", "val_auc", "samples/s"],
        ((h.epoch, h.train_loss, h.val_loss, h.val_auc, round(h.samples_per_s)) for h in r.history),
    ))
    where = "local mode (no Ray workers)" if r.num_workers == 0 else f"x{r.num_workers}"
    console.print(kv_table("Training", [
        ("MLflow run", r.run_id),
        ("model", r.model_uri),
        ("dataset", f"{r.dataset_name}/{r.dataset_version}"),
        ("best epoch", f"{r.best_epoch} of {r.epochs_run}" + (" (early stop)" if r.stopped_early else "")),
        *((k, round(v) if k == "samples_per_s" else v) for k, v in r.metrics.items()),
        ("data path", f"{r.data_path} on {r.device} {where}"),
        ("resumed", r.resumed),
        ("wall time s", r.wall_s),
    ]))


def _evaluation(report: Any) -> None:
    cand, prod = report.candidate, report.production
    bounds = {c.name: c for c in report.gate.checks}
    rows: list[list[Any]] = []
    for metric, limit in (("auc", "min_auc"), ("log_loss", "max_log_loss"), ("brier", "max_brier"),
                          ("calibration_error", "max_calibration_error")):
        check = bounds[limit]
        rows.append([metric, getattr(cand, metric), getattr(prod, metric) if prod else None,
                     f"{check.op} {check.bound}"])
    title = (f"Evaluation of run {report.run_id} on {report.dataset}/{report.dataset_version} "
             f"({report.split}, {report.rows} rows)")
    prod_col = f"production v{report.production_version}" if report.production_version else "production"
    console.print(rows_table(title, ["metric", "candidate", prod_col, "bound"], rows))
    slices = sorted(set(cand.slices) | set(prod.slices if prod else {}))
    console.print(rows_table(
        "AUC by slice", ["slice", "rows", "candidate", prod_col],
        [[s, cand.slices[s].rows if s in cand.slices else None,
          cand.slices[s].auc if s in cand.slices else None,
          prod.slices[s].auc if prod and s in prod.slices else None] for s in slices]))
    if report.oracle is not None:
        o = report.oracle
        console.print(kv_table("Demo oracle", [("rows", o.rows), ("oracle AUC", o.oracle_auc),
                                              ("candidate AUC", o.candidate_auc), ("gap", o.gap)]))
    console.print(rows_table(
        "Gate", ["check", "value", "bound", "result"],
        [[c.name, c.value, f"{c.op} {c.bound}" if c.bound is not None else "-", "pass" if c.passed else "FAIL"]
         for c in report.gate.checks]))
    style = "green" if report.verdict == "passed" else "red"
    console.print(f"gate: {report.gate.note}", soft_wrap=True)
    console.print(f"verdict: [{style}]{report.verdict}[/{style}]")


def _promotion(result: Any) -> None:
    rows: list[tuple[str, Any]] = [
        ("version", result.version), ("run id", result.run_id), ("replaced version", result.previous_version),
        ("actor", result.actor), ("at", result.at.isoformat()), ("reason", result.reason),
        ("forced", result.forced), ("verdict", result.verdict),
    ]
    rows += [(k, v) for k, v in sorted(result.metrics.items())]
    console.print(kv_table(f"{result.action}: {result.model_uri}", rows))
    if not result.changed:
        console.print(f"nothing changed: version {result.version} is already in production", soft_wrap=True)


_STATUS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]"}


def _doctor(report: Any) -> None:
    from rich.markup import escape  # details quote backend errors: never read them as markup

    rows = [(c.name, _STATUS.get(c.status, c.status), escape(c.detail),
             escape(c.fix or "") if c.status in {"fail", "warn"} else "") for c in report.checks]
    console.print(rows_table(f"modelsvc doctor ({report.engine}, online store {report.online_store})",
                             ["check", "status", "detail", "fix"], rows))


def _pipeline(report: Any) -> None:
    def why(step: Any) -> str:
        summary = brief(step.summary)
        return f"{step.reason}{'; ' + summary if summary else ''}" if step.reason else summary

    rows = [(s.step, s.status, f"{s.seconds:.1f}s", s.error or why(s)) for s in report.steps]
    console.print(rows_table(f"modelsvc {'plan' if report.plan else 'run'} {report.start_date}..{report.end_date}",
                             ["step", "status", "time", "result"], rows))
    if not report.plan:
        console.print(f"run id: {report.run_id or '-'}   dataset: {report.dataset_version or '-'}   "
                      f"promoted version: {report.promoted_version or '-'}   total: {report.seconds:.1f}s")


def _predictions(result: Any) -> None:
    columns = ["user_id", "p_click", "features missing"] + ((result.predictions[0].features and ["features"]) or [])
    console.print(rows_table(
        f"Predictions of {result.model_uri} (version {result.model_version}) at {result.at:%Y-%m-%d %H:%M:%S}",
        columns,
        ([p.user_id, f"{p.p_click:.6f}", ", ".join(p.features_missing) or "-",
          *([", ".join(f"{k}={v}" for k, v in p.features.items())] if p.features else [])]
         for p in result.predictions)))


def _score(r: Any) -> None:
    console.print(kv_table("Scored", [
        ("table", r.table),
        ("days", f"{r.start_date} .. {r.end_date} ({len(r.days)} partitions)"),
        ("model", f"{r.model_uri} (version {r.model_version})"),
        ("impressions", r.rows),
        ("mean p_click", r.mean_p_click),
        ("features missing", f"{r.missing_share:.1%}"),
        ("seconds", r.seconds),
    ]))


_TABLES: dict[str, Any] = {
    "DemoDataReport": _demo_data, "EtlReport": _etl, "MaterializeReport": _materialize,
    "DatasetManifest": _dataset, "TrainResult": _train, "EvalReport": _evaluation, "Promotion": _promotion,
    "DoctorReport": _doctor, "PipelineReport": _pipeline, "PredictionBatch": _predictions,
    "ScoreReport": _score, "DatasetList": _datasets,
}
_JSON: dict[str, Any] = {"DoctorReport": lambda r: r.model_dump(mode="json") | {"ok": r.ok}}


def show_config(data: Mapping[str, Any], as_json: bool) -> None:
    """The resolved settings: JSON, or YAML (not folded: long paths and URIs must stay parseable)."""
    if as_json:
        emit_json(data)
        return
    import yaml

    console.print(yaml.safe_dump(dict(data), sort_keys=False).rstrip(), soft_wrap=True, markup=False)


def show_runs(records: list[Any], as_json: bool) -> None:
    """The pipeline's run history, newest first."""
    if as_json:
        emit_json([r.model_dump(mode="json") | {"status": r.status} for r in records])
        return
    rows = []
    for r in records:
        rep = r.report
        steps = " ".join(f"{s.step}:{s.status}" for s in rep.steps)
        when = f"{rep.started_at:%Y-%m-%d %H:%M:%S}" if rep.started_at else "-"
        rows.append((when, f"{rep.start_date}..{rep.end_date}", r.status, f"{rep.seconds:.1f}s", steps,
                     rep.message or f"run {rep.run_id or '-'}, promoted {rep.promoted_version or '-'}"))
    console.print(rows_table(f"modelsvc runs ({len(records)})", ["started (UTC)", "range", "status", "time",
                                                                   "steps", "result"], rows))
