"""A small model directory for pull/cache tests: nested version dirs, labels, binaries."""

from __future__ import annotations

import random
from pathlib import Path

MiB = 1024 * 1024


def make_model(root: Path, weights: int = 3 * MiB + 11, seed: int = 1, extra: int = 12345) -> dict[str, bytes]:
    """Write the model under *root*; return {relative path: bytes}."""
    rnd = random.Random(seed)
    files = {
        "config.pbtxt": b'name: "m"\nbackend: "python"\n',
        "labels.txt": b"cat\ndog\n",
        "1/model.py": b"# model\n",
        "1/weights.bin": rnd.randbytes(weights),
        "2/sub/extra.bin": rnd.randbytes(extra),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under *root*."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def upload(s3, bucket: str, prefix: str, files_root: Path) -> None:  # type: ignore[no-untyped-def]
    """Upload *files_root* to ``s3://bucket/prefix`` on a test S3 server fixture."""
    from servers.upload import upload_tree_s3

    upload_tree_s3(s3, bucket, prefix, files_root)
