"""The Feast registry on object storage (``features.registry = s3://…``) against the S3 API server of the
fixtures: Feast's S3 registry store (boto3) finds the endpoint through ``AWS_ENDPOINT_URL``; a missing bucket or
refused credentials are one line naming the setting; the SQLite online store never goes to a URI (78)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from modelsvc.config import load_settings
from modelsvc.errors import ConfigError, NotFoundError, PermissionDeniedError
from tests.feature_data import T0, random_case, write_offline, write_realtime
from tests.fixtures.s3 import S3Service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.slow
def test_materialize_and_read_online_with_the_registry_on_s3(workdir: Path, s3_env: S3Service,
                                                               s3_bucket: str) -> None:
    from modelsvc.features import get_online_features, materialize

    registry = f"{s3_bucket}/feast/registry.db"
    settings = load_settings(workdir / "configs", features={"registry": registry})
    off, rt, _ = random_case(3, users=10, days=5)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)

    end = pd.Timestamp(T0 + timedelta(days=4)).to_pydatetime()
    first = materialize(settings, end=end)
    assert first.applied is True
    bucket = s3_bucket.removeprefix("s3://")
    assert "feast/registry.db" in s3_env.keys(bucket)
    assert not (root / "feast" / "registry.db").exists()  # the bucket holds the registry, the disk does not

    # a second process (fresh settings, no cache) reads the same registry back: nothing to re-apply
    again = materialize(load_settings(workdir / "configs", features={"registry": registry}), end=end)
    assert again.applied is False
    assert again.rows == 0
    online = get_online_features(settings, sorted(off["user_id"].unique().tolist())[:3])
    assert len(online) == 3

    from modelsvc.features.health import check_registry

    assert check_registry(settings, 5.0).endswith("2 feature views, 1 feature services, 2 entities")


def test_missing_bucket_and_refused_credentials_name_the_registry(workdir: Path, s3_env: S3Service,
                                                                   s3_bucket: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsvc import storage
    from modelsvc.features import feature_store

    missing = load_settings(workdir / "configs", features={"registry": "s3://no-such-bucket-f/registry.db"})
    with pytest.raises(NotFoundError, match=r"bucket 'no-such-bucket-f' of features\.registry does not exist") as e:
        feature_store(missing)
    assert e.value.exit_code == 66
    from modelsvc.features.health import check_registry
    from modelsvc.health import CheckOutcome

    with pytest.raises(CheckOutcome) as outcome:  # doctor: a failure, not "no registry yet"
        check_registry(missing, 5.0)
    assert outcome.value.status == "fail"
    assert "bucket 'no-such-bucket-f' of features.registry does not exist" in str(outcome.value)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    storage.clear_cache()
    refused = load_settings(workdir / "configs", features={"registry": f"{s3_bucket}/registry.db"})
    with pytest.raises(PermissionDeniedError) as info:
        feature_store(refused)
    assert info.value.exit_code == 77
    assert "wrong-secret-value" not in str(info.value)


def test_registry_defaults_under_a_uri_root_and_the_sqlite_online_store_is_78(workdir: Path, s3_env: S3Service,
                                                                               s3_bucket: str) -> None:
    from modelsvc.features import feature_store

    settings = load_settings(workdir / "configs", paths={"root": f"{s3_bucket}/modelsvc"})
    assert settings.feast_registry() == f"{s3_bucket}/modelsvc/feast/registry.db"
    with pytest.raises(ConfigError, match=r"paths\.feast must be a local folder when paths\.root is a URI") as e:
        feature_store(settings)
    assert e.value.exit_code == 78
    assert "features.online_store: redis" in str(e.value)
