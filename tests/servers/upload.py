"""Upload a local directory tree to one of the test object stores.

Keys are ``prefix/<path relative to local_dir>`` with forward slashes; an empty prefix puts the
files at the top of the bucket. Each helper returns the keys it wrote, sorted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .azure import AzuriteServer
    from .gcs import FakeGcsServer
    from .s3 import S3Server

__all__ = ["iter_tree", "upload_tree_azure", "upload_tree_gcs", "upload_tree_s3"]


def iter_tree(prefix: str, local_dir: Path | str) -> Iterator[tuple[str, Path]]:
    """(key, file) for every regular file under ``local_dir``, in sorted order."""
    base = Path(local_dir)
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    head = prefix.strip("/")
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        yield (f"{head}/{rel}" if head else rel), path


def upload_tree_s3(server: S3Server, bucket: str, prefix: str, local_dir: Path | str) -> list[str]:
    """Upload to ``s3://bucket/prefix/...``, creating the bucket if it does not exist."""
    from botocore.exceptions import ClientError

    client = server.client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)
    keys = []
    for key, path in iter_tree(prefix, local_dir):
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def upload_tree_gcs(server: FakeGcsServer, bucket: str, prefix: str, local_dir: Path | str) -> list[str]:
    """Upload to ``gs://bucket/prefix/...``, creating the bucket if it does not exist."""
    client = server.client()
    b = client.lookup_bucket(bucket) or client.create_bucket(bucket)
    keys = []
    for key, path in iter_tree(prefix, local_dir):
        b.blob(key).upload_from_filename(str(path))
        keys.append(key)
    return keys


def upload_tree_azure(server: AzuriteServer, container: str, prefix: str, local_dir: Path | str) -> list[str]:
    """Upload to container ``container`` under ``prefix/``, creating the container if needed."""
    from azure.core.exceptions import ResourceExistsError

    service = server.service_client()
    cc = service.get_container_client(container)
    try:
        cc.create_container()
    except ResourceExistsError:
        pass
    keys = []
    for key, path in iter_tree(prefix, local_dir):
        with open(path, "rb") as f:
            cc.upload_blob(key, f, overwrite=True)
        keys.append(key)
    return keys
