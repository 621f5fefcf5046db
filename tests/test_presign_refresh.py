"""Presigned URLs that expire during a pull are signed again (real SeaweedFS).

A model larger than what one signature's lifetime covers must not fail part-way: a
request refused as unauthorized (S3: 403 "Request has expired") gets a fresh URL from
the store's presigner and the file continues; without a presigner the error is clear.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dfrepo import Signed, errors
from dfrepo.engine import Downloader, DownloadRequest, TransferConfig

pytestmark = pytest.mark.servers

CFG = TransferConfig(fsync=False, range_size=64 * 1024, max_concurrency=4, max_attempts=2, backoff_base=0.01)
DATA = bytes(range(256)) * 4096  # 1 MiB: 16 ranges of 64 KiB


@pytest.fixture()
def bucket(seaweedfs):  # type: ignore[no-untyped-def]
    client = seaweedfs.client(direct=True)
    try:
        client.create_bucket(Bucket="presign-refresh")
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object(Bucket="presign-refresh", Key="w.bin", Body=DATA)
    return client


def _sign(client, seconds: int) -> str:  # type: ignore[no-untyped-def]
    return client.generate_presigned_url("get_object", Params={"Bucket": "presign-refresh", "Key": "w.bin"},
                                         ExpiresIn=seconds)


def test_expired_url_is_signed_again(bucket, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expired = _sign(bucket, 1)
    time.sleep(2.1)
    signed: list[str] = []

    def fresh() -> Signed:
        signed.append(_sign(bucket, 300))
        return Signed(signed[-1])

    req = DownloadRequest(url=expired, dest=tmp_path / "w.bin", size=len(DATA), refresh=fresh)
    with Downloader(CFG) as dl:
        (res,) = dl.download_many([req])
    assert (tmp_path / "w.bin").read_bytes() == DATA
    assert len(signed) == 1, "every range refused at once re-signs the file once"
    assert res.retries == 0, "a re-signed request is not a retry of a broken one"


def test_expired_url_without_a_presigner_fails_clearly(bucket, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expired = _sign(bucket, 1)
    time.sleep(2.1)
    with Downloader(CFG) as dl, pytest.raises(errors.HTTPStatusError) as ei:
        dl.download_many([DownloadRequest(url=expired, dest=tmp_path / "w.bin", size=len(DATA))])
    assert ei.value.status == 403
    assert not (tmp_path / "w.bin").exists()


def test_a_presigner_that_keeps_failing_is_bounded(bucket, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dfrepo.engine.jobs import MAX_REFRESHES

    calls: list[int] = []

    def refused() -> Signed:  # a presigner whose URLs the store never accepts (wrong key)
        calls.append(1)
        return Signed(_sign(bucket, 300).replace("X-Amz-Signature=", "X-Amz-Signature=0"))

    req = DownloadRequest(url=refused().url, dest=tmp_path / "w.bin", size=len(DATA), refresh=refused)
    calls.clear()
    with Downloader(CFG) as dl, pytest.raises(errors.HTTPStatusError):
        dl.download_many([req])
    assert len(calls) == MAX_REFRESHES
