"""What the Dockerfile does, done here (no Docker engine): build the wheel, install it into a fresh venv, run the
console script from outside the repo with configs in their own folder (like /app/configs), env-only config."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.fixtures._service import free_port

REPO = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_only_existing_paths_and_keeps_its_contract():
    text = (REPO / "Dockerfile").read_text()
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copies = [shlex.split(m) for m in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M)]
    assert copies, "no COPY in the Dockerfile"
    for args in copies:
        for src in args[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
            assert src not in ignored, f"Dockerfile copies {src}, which .dockerignore excludes"
    assert re.search(r"^FROM .+ AS builder$", text, flags=re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    for arg in ("ARG TORCH_SPEC=torch==2.13.0", "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu"):
        assert arg in text
    assert "[hive,redis,s3,serve]" in text
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in text
    assert "COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in text
    assert "MODELSVC_CONFIG_DIR=/app/configs" in text
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users
    assert users[-1] not in {"root", "0"}
    # the Makefile's docker target passes the same build args
    assert "--build-arg TORCH_SPEC" in (REPO / "Makefile").read_text()


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist), str(REPO)], check=True, cwd=tmp_path, timeout=300)
    (wheel,) = dist.glob("modelsvc-*.whl")

    # every module of the source tree is in the wheel (a folder without __init__.py would be left out)
    names = set(zipfile.ZipFile(wheel).namelist())
    src = REPO / "src"
    expected = {p.relative_to(src).as_posix() for p in (src / "modelsvc").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected - names == set()
    assert "modelsvc/py.typed" in names

    # a fresh venv without the main one's modelsvc; its dependencies reused through a .pth (no downloads)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "main_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)

    app = tmp_path / "app"
    (app / "configs").mkdir(parents=True)
    for f in (REPO / "configs").rglob("*.yaml"):
        target = app / "configs" / f.relative_to(REPO / "configs")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.read_text())
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_", "RAY_", "PYTHON"))}
    env |= {"MODELSVC_CONFIG_DIR": str(app / "configs"), "MODELSVC_PATHS__ROOT": str(app / "data"),
            "MODELSVC_PROFILE": "production", "MODELSVC_HIVE__PASSWORD": "image-secret"}
    exe = env_dir / "bin" / "modelsvc"

    where = subprocess.run([str(py), "-c", "import modelsvc; print(modelsvc.__file__)"], cwd=run_dir, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), where

    helped = subprocess.run([str(exe), "--help"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "doctor" in helped.stdout
    assert "config" in helped.stdout

    shown = subprocess.run([str(exe), "config", "--json"], cwd=run_dir, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["profile"] == "production"
    assert data["warehouse"]["engine"] == "hive"
    assert data["resolved"]["root"] == str(app / "data")
    assert data["hive"]["password"] == "**********"
    assert "image-secret" not in shown.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--help"], "modelsvc train"),            # docker run IMAGE train --help
    (["modelsvc", "train", "--help"], "modelsvc train"),  # docker run IMAGE modelsvc train --help (a CronJob's form)
    (["--version"], "modelsvc "),                    # an option first goes to modelsvc
    (["sh", "-c", "echo other program"], "other program"),  # any program on PATH runs as given
])
def test_image_entrypoint_runs_modelsvc_with_or_without_its_name(args, expected, tmp_path):
    """The Dockerfile's entrypoint script, run as the image runs it (with the venv's bin first on PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_", "RAY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["sh", str(REPO / "docker-entrypoint.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert expected in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(300)
def test_documented_docker_run_modelsvc_train_reaches_train_configured_by_environment_alone(tmp_path, s3_env,
                                                                                          s3_bucket):
    """`docker run IMAGE modelsvc train` and `docker run IMAGE train` (docs/production.md), through the entrypoint
    script with the venv first on PATH, settings and S3 credentials from the environment alone, no volume: both
    run `modelsvc train`, which looks for its dataset on the bucket and says none was built (66), the same line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_", "RAY_"))}
    env |= s3_env.env() | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                           "MODELSVC_CONFIG_DIR": str(REPO / "configs"),
                           "MODELSVC_PATHS__ROOT": f"{s3_bucket}/modelsvc",
                           "MODELSVC_PATHS__STATE": str(tmp_path / "state"),
                           # a tracking server, as in production.md (none answers here: the dataset is looked
                           # for first, and without a tracking URI a URI root is a 78 naming paths.mlflow)
                           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    outs = []
    for args in (["modelsvc", "train"], ["train"]):
        done = subprocess.run(["sh", str(REPO / "docker-entrypoint.sh"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
        outs.append((done.returncode, [ln for ln in done.stderr.splitlines() if ln.startswith("Error:")]))
    assert outs[0] == outs[1], outs
    code, errors = outs[0]
    assert code == 66, outs
    assert len(errors) == 1, outs
    assert s3_bucket in errors[0], errors  # it looked on the bucket
    assert s3_env.secret_key not in str(outs)
