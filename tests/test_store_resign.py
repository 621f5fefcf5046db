"""Listed objects can re-sign their URL, and a pull whose URLs expired still succeeds (issue #15).

Real servers: SeaweedFS (checks SigV4 expiry), Azurite (checks SAS expiry) and
fake-gcs-server (accepts any signature and does not check expiry, so for GCS the test
shows a fresh signature with the same task identity rather than a refused request).
Every re-signed URL keeps the Dragonfly task id of the original: the signature
parameters are filtered out of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dfrepo.credentials import AzureCredentials, GCSCredentials, S3Credentials
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.dragonfly.headers import filtered_query_params
from dfrepo.dragonfly.taskid import task_id
from dfrepo.engine.settings import TransferConfig
from dfrepo.locations import parse_location
from dfrepo.objects import RemoteObject
from dfrepo.pull import pull
from dfrepo.stores import list_model
from dfrepo.stores._common import MIN_RESIGN_EXPIRY

pytestmark = pytest.mark.servers

CFG = TransferConfig(range_size=256 * 1024, concurrency=4, fsync=False, max_attempts=2,
                     backoff_base=0.01)
DF = DragonflyConfig()


def _model(root: Path) -> dict[str, bytes]:
    files = {"config.pbtxt": b'name: "m"\n', "1/model.bin": os.urandom(1024 * 1024 + 5)}
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _upload(kind: str, server: Any, bucket: str, prefix: str, local: Path) -> None:
    from servers import upload  # type: ignore[import-not-found]

    {"s3": upload.upload_tree_s3, "gs": upload.upload_tree_gcs,
     "as": upload.upload_tree_azure}[kind](server, bucket, prefix, local)


def _tid(url: str) -> str:
    return task_id(url, filtered_query_params=filtered_query_params(DF, url))


def _status(url: str) -> int:
    import urllib3

    with urllib3.PoolManager() as pool:
        return int(pool.request("GET", url, timeout=30, retries=False).status)


def _check_resign(objs: list[RemoteObject]) -> None:
    for obj in objs:
        assert obj.resign is not None, obj
        signed = obj.resign()
        assert signed.headers == obj.headers == {}, "the signature travels in the URL"
        fresh = signed.url
        assert fresh != obj.url
        assert _tid(fresh) == _tid(obj.url), "a re-signed URL must keep the task identity"
        assert "resign=" not in repr(obj)
    a = objs[0]
    assert a == RemoteObject(a.rel_path, a.size, a.url, a.version, a.md5, a.crc32c, dict(a.headers),
                             a.source)  # the signer is not part of equality


def _pull_expired(location: Any, objs: list[RemoteObject], files: dict[str, bytes], dest: Path) -> None:
    time.sleep(2.2)  # every listed URL (expiry=1) has expired
    assert _status(objs[-1].url) == 403
    res = pull(location, dest, objects=objs, dragonfly=DF, transfer=CFG, env={})
    for rel, data in files.items():
        assert dest.joinpath(*rel.split("/")).read_bytes() == data
    assert res.retries == 0


def test_s3_expired_urls_are_resigned(seaweedfs: Any, tmp_path: Path) -> None:
    files = _model(tmp_path / "m")
    _upload("s3", seaweedfs, "rsgn", "repo/m", tmp_path / "m")
    loc = f"s3://{seaweedfs.host}:{seaweedfs.port}/rsgn/repo/m"
    creds = S3Credentials(key_id=seaweedfs.access_key, secret_key=seaweedfs.secret_key,
                          region=seaweedfs.region)
    objs = list_model(loc, creds, expiry=1)
    _check_resign(objs)
    fresh = parse_qs(urlsplit(objs[0].resign().url).query)  # type: ignore[misc]
    assert fresh["X-Amz-Expires"] == [str(MIN_RESIGN_EXPIRY)]
    _pull_expired(loc, objs, files, tmp_path / "out")


def test_azure_expired_sas_is_resigned(azurite: Any, tmp_path: Path) -> None:
    files = _model(tmp_path / "m")
    _upload("as", azurite, "rsgn", "repo/m", tmp_path / "m")
    loc = parse_location(f"as://{azurite.account}/rsgn/repo/m", azure_endpoint=azurite.endpoint)
    creds = AzureCredentials(account_name=azurite.account, account_key=azurite.key, auth_type="key")
    objs = list_model(loc, creds, expiry=1)
    _check_resign(objs)
    _pull_expired(loc, objs, files, tmp_path / "out")


def test_gcs_signed_urls_can_be_resigned(fake_gcs: Any, tmp_path: Path) -> None:
    from test_credentials import make_sa_key_file  # type: ignore[import-not-found]

    files = _model(tmp_path / "m")
    _upload("gs", fake_gcs, "rsgn", "repo/m", tmp_path / "m")
    loc = parse_location("gs://rsgn/repo/m", gcs_endpoint=fake_gcs.endpoint)
    objs = list_model(loc, GCSCredentials(service_account_path=make_sa_key_file(tmp_path)), expiry=1)
    time.sleep(1.1)  # a new X-Goog-Date
    _check_resign(objs)
    fresh = objs[0].resign().url  # type: ignore[misc]
    assert parse_qs(urlsplit(fresh).query)["generation"] == [objs[0].version]
    assert _status(fresh) == 200
    res = pull(loc, tmp_path / "out", objects=objs, dragonfly=DF, transfer=CFG, env={})
    assert res.files == len(files)
    # Unsigned media URLs (anonymous) do not expire: nothing to re-sign.
    assert all(o.resign is None for o in list_model(loc, GCSCredentials()))
