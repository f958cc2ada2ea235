"""modelsvc.storage on local paths: the same calls the object-store tests make against the S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsvc import storage
from modelsvc.errors import CannotCreateError, ConfigError


def test_locations_are_classified_and_joined() -> None:
    assert storage.scheme("s3://b/p") == "s3"
    assert storage.scheme("/data/x") == ""
    assert storage.is_uri("s3://b/p")
    assert storage.is_uri("gs://b/p")
    assert storage.is_uri("hdfs://nn:8020/p")
    assert not storage.is_uri("file:///tmp/x")
    assert not storage.is_uri("relative/dir")
    assert storage.local_path("file:///tmp/x") == Path("/tmp/x")
    assert storage.local_path("s3://b/p") is None
    assert storage.join("s3://b/p/", "datasets", "/v1/") == "s3://b/p/datasets/v1"
    assert storage.join("/data", "datasets", "v1") == "/data/datasets/v1"
    # a file:// URI joins to its local path (Path alone folded 'file:///a' into a relative 'file:/a')
    assert storage.join("file:///tmp/rayx", "run1", "modelsvc_run.json") == "/tmp/rayx/run1/modelsvc_run.json"


def test_the_run_state_of_a_file_uri_is_beside_ray_trains_checkpoints(tmp_path: Path) -> None:
    from modelsvc.training.ray_runtime import run_config_storage
    from modelsvc.training.run_log import RunState

    state = RunState(f"file://{tmp_path}/ray", "run1")
    state.write({"mlflow_run_id": "r"})
    assert (tmp_path / "ray" / "run1" / "modelsvc_run.json").is_file()
    assert run_config_storage(f"file://{tmp_path}/ray") == {"storage_path": str(tmp_path / "ray")}
    assert RunState(str(tmp_path / "ray"), "run1").read() == {"mlflow_run_id": "r"}


class _PrefixOnlyStore:
    """A filesystem whose credentials may read under a prefix but not look at the bucket itself (a
    least-privilege IAM policy: s3:ListBucket only with an s3:prefix condition)."""

    def __init__(self, there: bool) -> None:
        self.there = there
        self.asked: list[str] = []

    def get_file_info(self, path: str) -> object:
        import pyarrow.fs as pafs

        self.asked.append(path)
        if "/" not in path:
            raise OSError("When getting information for bucket 'b': AWS Error ACCESS_DENIED during HeadBucket "
                          "operation: No response body.")
        return pafs.FileInfo(path, pafs.FileType.Directory if self.there else pafs.FileType.NotFound)


@pytest.mark.parametrize("there", [True, False])
def test_credentials_limited_to_a_prefix_pass_the_bucket_check(there: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``require_bucket`` looks at the location first; a refused look at the bucket itself (only done when the
    location is empty) is not a 77: the location's own reads and writes say whether they are allowed."""
    store = _PrefixOnlyStore(there)
    monkeypatch.setattr(storage, "filesystem", lambda location: (store, "b/team/ray"))
    storage.require_bucket("s3://b/team/ray", setting="ray.storage_path")
    assert store.asked == (["b/team/ray"] if there else ["b/team/ray", "b"])


def test_display_never_shows_credentials() -> None:
    shown = storage.display("s3://AKIA123:s3cr3t@bucket/path?X-Amz-Signature=abc")
    assert "s3cr3t" not in shown
    assert "AKIA123" not in shown
    assert "Signature" not in shown
    assert shown == "s3://bucket/path"


@pytest.mark.parametrize(("location", "culprit"), [("ftp://host/x", "ftp://"), ("s3:///no-bucket", "no bucket")])
def test_unsupported_locations_are_config_errors(location: str, culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit) as info:
        storage.check_location(location, setting="paths.datasets")
    assert info.value.exit_code == 78
    assert "paths.datasets" in str(info.value)


def test_local_write_read_list_delete(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    storage.write_text(storage.join(root, "a", "one.json"), "{}")
    with storage.open_output(storage.join(root, "a", "b", "two.bin")) as f:
        f.write(b"xy")  # type: ignore[attr-defined]
    assert storage.read_text(storage.join(root, "a", "one.json")) == "{}"
    assert storage.list_dir(root) == ["a"]
    assert storage.list_dir(storage.join(root, "a")) == ["b", "one.json"]
    assert storage.list_files(root) == [("a/b/two.bin", 2), ("a/one.json", 2)]
    assert storage.list_dir(storage.join(root, "missing")) == []
    assert storage.is_file(storage.join(root, "a", "one.json"))
    assert not storage.is_file(storage.join(root, "a"))
    storage.delete(storage.join(root, "a", "b"))
    storage.delete(storage.join(root, "never-there"))
    assert storage.list_files(root) == [("a/one.json", 2)]
    assert not storage.exists(storage.join(root, "a", "b"))


def test_local_write_bytes_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    storage.write_text(str(target), "old")
    storage.write_text(str(target), "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_file_where_a_folder_is_expected_is_exit_73(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CannotCreateError) as info:
        storage.write_text(str(tmp_path / "f" / "inside.json"), "{}")
    assert info.value.exit_code == 73
