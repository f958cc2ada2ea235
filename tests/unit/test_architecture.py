"""Each heavy library has one home in the package (docs/architecture.md, "Who may import what"): the imports of
every module of src/modelsvc, at any depth (lazy imports inside functions count), are checked against that table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "modelsvc"

# library -> the modules (paths under src/modelsvc, a trailing / for a whole package) that may import it
HOMES = {
    "mlflow": ["tracking.py", "training/"],
    "feast": ["features/"],
    "ray": ["training/"],
    "torch": ["training/"],
    "pyhive": ["warehouse/hive.py"],
    "prefect": ["flows.py"],
    "fastapi": ["serving/"],
    "uvicorn": ["serving/"],
    "boto3": ["storage.py"],
    "orjson": ["serving/"],
    "msgpack": ["features/online_read.py"],
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> list[tuple[str, set[str]]]:
    return [(p.relative_to(SRC).as_posix(), _imports(p)) for p in sorted(SRC.rglob("*.py"))]


@pytest.mark.parametrize("library", sorted(HOMES))
def test_each_heavy_library_is_imported_only_in_its_home(library):
    homes = HOMES[library]
    outside = [name for name, imported in _modules() if library in imported
               and not any(name == h or (h.endswith("/") and name.startswith(h)) for h in homes)]
    assert outside == [], f"{library} imported outside {homes}: {outside}"


def test_the_cli_imports_no_heavy_library():
    for name, imported in _modules():
        if name.startswith("cli/"):
            assert not imported & set(HOMES), f"{name} imports {sorted(imported & set(HOMES))}"


def test_the_table_is_the_one_in_the_architecture_doc():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for library, homes in HOMES.items():
        row = f"| `{library}` | {', '.join(f'`{h}`' for h in homes)} |"
        assert row in doc, f"docs/architecture.md lacks the row: {row}"
