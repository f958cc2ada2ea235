"""`modelsvc --help` stays instant: the CLI package never imports the heavy backends (they load lazily)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ray", "torch", "feast", "mlflow", "pyhive", "duckdb", "polars", "pandas", "pyarrow")


def test_cli_imports_no_heavy_dependency() -> None:
    code = (f"import sys; import modelsvc.cli; print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_library_chatter_goes_to_stderr_so_stdout_holds_only_the_result() -> None:
    """What third-party code prints while a command's library call runs (Ray worker logs, MLflow notices), from
    Python or straight to file descriptor 1, lands on stderr: ``--json`` output always parses."""
    code = ("import os; from modelsvc.cli import run\n"
            "run(lambda: (print('py-noise'), os.write(1, b'fd-noise\\n')))\n"
            "print('RESULT')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout == "RESULT\n"
    assert "py-noise" in proc.stderr
    assert "fd-noise" in proc.stderr


def test_library_deprecation_warnings_are_hidden_unless_verbose() -> None:
    import warnings

    from modelsvc.cli import _state, run

    def noisy() -> int:
        warnings.simplefilter("always")  # what some libraries do when imported
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
        warnings.warn("real problem", UserWarning, stacklevel=1)
        return 1

    for verbose in (False, True):
        _state["verbose"] = verbose
        try:
            with warnings.catch_warnings(record=True) as shown:  # what reaches the display
                assert run(noisy) == 1
        finally:
            _state["verbose"] = False
        messages = [str(w.message) for w in shown]
        assert "real problem" in messages
        assert ("old api" in messages) is verbose
