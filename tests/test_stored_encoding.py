"""Objects stored with a ``Content-Encoding`` arrive as the bytes the store holds.

S3 returns the stored ``Content-Encoding: gzip`` whatever the request's
``Accept-Encoding`` says; Triton's own S3 download writes those bytes unchanged, and so
does dfrepo (the listing's size and MD5 are of the stored bytes). Real SeaweedFS.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from dfrepo.engine import TransferConfig, download

pytestmark = pytest.mark.servers

CFG = TransferConfig(fsync=False, max_attempts=2, backoff_base=0.01)


@pytest.mark.parametrize("size", [10_000, 3 * 1024 * 1024])
def test_gzip_stored_object_is_written_as_stored(seaweedfs, tmp_path: Path, size: int) -> None:  # type: ignore[no-untyped-def]
    raw = bytes(range(256)) * (size // 256)
    stored = gzip.compress(raw, mtime=0)
    client = seaweedfs.client(direct=True)
    bucket = "stored-encoding"
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object(Bucket=bucket, Key="w.bin.gz", Body=stored, ContentEncoding="gzip")
    head = client.head_object(Bucket=bucket, Key="w.bin.gz")
    assert head["ContentEncoding"] == "gzip"
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "w.bin.gz"}, ExpiresIn=300)
    md5 = hashlib.md5(stored).hexdigest()
    # Small ranges, so the object is fetched as several ranges as well as one GET.
    for i, cfg in enumerate((CFG, TransferConfig(fsync=False, range_size=64 * 1024, max_concurrency=4))):
        out = tmp_path / f"out{i}"
        res = download(url, out, size=len(stored), md5=md5, config=cfg)
        assert res.size == len(stored)
        assert out.read_bytes() == stored
