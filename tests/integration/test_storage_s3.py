"""modelsvc.storage against a real S3 API server (moto's standalone server on loopback, IAM auth enforced)."""

from __future__ import annotations

import pytest

from modelsvc import storage
from modelsvc.errors import NotFoundError, PermissionDeniedError, ServiceUnavailableError
from tests.fixtures.s3 import S3Service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_write_read_list_delete_on_s3(s3_env: S3Service, s3_bucket: str) -> None:
    root = storage.join(s3_bucket, "root")
    storage.write_text(storage.join(root, "a", "one.json"), '{"x": 1}')
    with storage.open_output(storage.join(root, "a", "b", "two.bin")) as f:
        f.write(b"xy")  # type: ignore[attr-defined]
    assert storage.read_text(storage.join(root, "a", "one.json")) == '{"x": 1}'
    assert storage.list_dir(root) == ["a"]
    assert storage.list_dir(storage.join(root, "a")) == ["b", "one.json"]
    assert storage.list_files(root) == [("a/b/two.bin", 2), ("a/one.json", 8)]
    assert storage.list_files(storage.join(root, "nothing")) == []
    storage.delete(storage.join(root, "a", "b"))
    assert storage.list_files(root) == [("a/one.json", 8)]
    bucket = s3_bucket.removeprefix("s3://")
    # pyarrow keeps a deleted folder's parent as an empty "folder/" marker object; no data is left behind
    assert [k for k in s3_env.keys(bucket) if not k.endswith("/")] == ["root/a/one.json"]


def test_missing_bucket_is_66_naming_it(s3_env: S3Service) -> None:
    for call in (lambda: storage.read_text("s3://no-such-bucket-x/k.json"),
                 lambda: storage.write_text("s3://no-such-bucket-x/k.json", "{}")):
        with pytest.raises(NotFoundError, match="bucket 'no-such-bucket-x' does not exist") as info:
            call()
        assert info.value.exit_code == 66


def test_refused_credentials_are_77_and_never_printed(s3_env: S3Service, s3_bucket: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    storage.write_text(storage.join(s3_bucket, "k.json"), "{}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    for call in (lambda: storage.read_text(storage.join(s3_bucket, "k.json")),
                 lambda: storage.write_text(storage.join(s3_bucket, "k2.json"), "{}"),
                 lambda: storage.list_dir(s3_bucket)):
        with pytest.raises(PermissionDeniedError) as info:
            call()
        assert info.value.exit_code == 77
        assert "wrong-secret-value" not in str(info.value)
        assert s3_env.access_key not in str(info.value)
        assert "\n" not in str(info.value)


def test_unreachable_endpoint_is_69(s3_env: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures._service import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailableError, match="object store unreachable") as info:
        storage.read_text("s3://any-bucket/k.json")
    assert info.value.exit_code == 69
