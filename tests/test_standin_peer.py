"""Tests of the stand-in Dragonfly peer (peer/dfpeer), on real loopback sockets.

The peer must be a faithful dfdaemon proxy stand-in: dfrepo's own tests,
benchmarks and demo rely on it.  Reference: dragonfly-proxy.md §1-§3 and §8.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taskid_vectors as vectors
from dfpeer import DIRECT_SOURCE_THRESHOLD, PeerProcess, StandinPeer
from dfpeer.server import parse_range
from dfpeer.taskid import (
    DEFAULT_FILTERED_QUERY_PARAMS,
    auto_piece_length,
    blob_digest_task_id,
    canonical_url_a,
    canonical_url_b,
    content_task_id,
    parse_bytesize,
    task_id,
)
from dfpeer.testing import RangeOrigin
from servers.require import missing

MiB = 1 << 20
RULES = (r"/models/",)
PRESIGN_A = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261124%2Fus-east-1%2Fs3%2Faws4_request" \
    "&X-Amz-Date=20261124T080000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=aaaa"
PRESIGN_B = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261124%2Fus-east-1%2Fs3%2Faws4_request" \
    "&X-Amz-Date=20261124T090000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=bbbb"


# --------------------------------------------------------------------------- task-ID vectors (§2.5)

# (i) dragonflyoss/client id_generator tests, plus the v1.0.0 vector.
VECTORS_CLIENT = [*vectors.CLIENT, vectors.CLIENT_V1_0_0]
# (ii) canonicalization-B vectors (the also-A flag is dfrepo's concern: test_taskid.py).
VECTORS_B = [row[:-1] for row in vectors.TABLE_II]

BLOB_HEX = "b2c366cce7e68013d5441c6326d5a3e1b12aeb5ed58564d0fd3fa089bc29cb6e"


@pytest.mark.parametrize(("url", "piece_length", "tag", "app", "filtered", "revision", "expected"), VECTORS_CLIENT)
def test_task_id_client_vectors(url: str, piece_length: int | None, tag: str | None, app: str | None,
                                filtered: list[str], revision: str | None, expected: str) -> None:
    for generation in ("A", "B"):  # these URLs canonicalize identically in both generations
        got = task_id(url, piece_length=piece_length, tag=tag, application=app, filtered=filtered,
                      revision=revision, canonicalization=generation)  # type: ignore[arg-type]
        assert got == expected


@pytest.mark.parametrize(("url", "piece_length", "tag", "app", "filtered", "expected"), VECTORS_B)
def test_task_id_canonicalization_b_vectors(url: str, piece_length: int | None, tag: str | None, app: str | None,
                                            filtered: list[str], expected: str) -> None:
    assert task_id(url, piece_length=piece_length, tag=tag, application=app, filtered=filtered) == expected


@pytest.mark.parametrize(("url", "piece_length", "tag", "app", "filtered", "canonical", "expected"), vectors.TABLE_III)
def test_task_id_canonicalization_a_vectors(url: str, piece_length: int | None, tag: str | None, app: str | None,
                                            filtered: list[str], canonical: str, expected: str) -> None:
    assert canonical_url_a(url, filtered) == canonical
    got = task_id(url, piece_length=piece_length, tag=tag, application=app, filtered=filtered, canonicalization="A")
    assert got == expected


@pytest.mark.parametrize(("url", "filtered", "canonical"), vectors.CANONICAL_B)
def test_canonical_strings_b(url: str, filtered: list[str], canonical: str) -> None:
    assert canonical_url_b(url, filtered) == canonical


def test_content_and_blob_digest_vectors() -> None:
    assert content_task_id(vectors.CONTENT) == vectors.CONTENT_ID
    assert task_id("https://ignored", tag="t", content=vectors.CONTENT) == vectors.CONTENT_ID
    hex64 = "1234567890abcdef" * 4
    assert blob_digest_task_id(f"https://registry.example.com/v2/myorg/myrepo/blobs/sha256:{hex64}") == hex64
    base = "http://registry.example.com/v2/library/ubuntu"
    assert blob_digest_task_id(f"{base}/blobs/sha256:{BLOB_HEX}") == BLOB_HEX
    assert blob_digest_task_id(f"{base}/blobs/sha256:{BLOB_HEX}?ns=docker.io") == BLOB_HEX
    assert blob_digest_task_id(f"{base}/manifests/sha256:{BLOB_HEX}") == BLOB_HEX
    assert blob_digest_task_id(f"{base}/blobs/sha512:{'ab' * 64}") == "ab" * 64
    assert blob_digest_task_id(f"{base}/blobs/sha256:abc") is None
    assert blob_digest_task_id(f"{base}/blobs/md5:{'a' * 32}") is None
    assert blob_digest_task_id(f"{base}/manifests/latest") is None


def test_presigned_worked_example_and_default_filters() -> None:
    signed = vectors.WORKED_EXAMPLE_BARE + "?" + PRESIGN_A
    for generation in ("A", "B"):
        for url in (vectors.WORKED_EXAMPLE_BARE, signed):
            got = task_id(url, filtered=DEFAULT_FILTERED_QUERY_PARAMS, canonicalization=generation)  # type: ignore[arg-type]
            assert got == vectors.WORKED_EXAMPLE_ID
    assert {"X-Goog-Signature", "OSSAccessKeyId", "q-signature", "ns", "X-Obs-Date"} <= set(DEFAULT_FILTERED_QUERY_PARAMS)
    assert "sig" not in DEFAULT_FILTERED_QUERY_PARAMS  # Azure SAS is not in the default list


def test_piece_length_rules() -> None:
    assert parse_bytesize("4194304") == 4 * MiB
    assert parse_bytesize("4mib") == 4 * MiB
    assert parse_bytesize("8MiB") == 8 * MiB
    assert parse_bytesize("4mb") == 4_000_000
    assert parse_bytesize("lots") is None
    gib = 1 << 30
    table = {gib // 2: 4, gib: 4, 2 * gib: 8, 4 * gib: 16, 8 * gib: 32, 10 * gib: 32, 16 * gib: 64, 100 * gib: 64}
    for size, piece_mib in table.items():
        assert auto_piece_length(size) == piece_mib * MiB
    assert auto_piece_length(0) == 4 * MiB
    # Upstream piece.rs: next_power_of_two(len / 500), > MIN and < MAX kept, else clamped.
    assert auto_piece_length(500 * 4 * MiB) == 4 * MiB  # exactly 4 MiB per piece
    assert auto_piece_length(500 * (4 * MiB + 1)) == 8 * MiB
    assert auto_piece_length(500 * 64 * MiB) == 64 * MiB
    assert auto_piece_length(500 * 64 * MiB + 500) == 64 * MiB


def test_parse_range() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=5-", 10) == (5, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=2-100", 10) == (2, 9)
    assert parse_range("bytes=2-3,5-6", 10) == (2, 3)  # multi-range: first one
    assert parse_range("bytes=10-", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=0-0", 0) is None


# --------------------------------------------------------------------------- proxy fixtures and helpers


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    complete: bool  # False if the body was shorter than Content-Length


def call(port: int, method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Reply:
    """One request through the proxy on a fresh connection (absolute- or origin-form *url*)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        try:
            data = resp.read()
            complete = True
        except http.client.IncompleteRead as exc:
            data, complete = exc.partial, False
        return Reply(resp.status, resp.msg, data, complete)
    finally:
        conn.close()


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating-ish content (cheap to build)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += counter.to_bytes(8, "little") + block[8:]
        counter += 1
    return bytes(out[:size])


def piece_gets(origin: RangeOrigin, path: str) -> list[str]:
    """Ranges of the origin GETs for *path*, excluding the bytes=0-0 stat."""
    return [r.range or "" for r in origin.requests_for(path, "GET") if r.range != "bytes=0-0"]


@pytest.fixture(scope="module")
def origin() -> Iterator[RangeOrigin]:
    with RangeOrigin() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_origin_failures(origin: RangeOrigin) -> None:
    origin.clear_failures()


@pytest.fixture()
def peer(tmp_path: Path) -> Iterator[StandinPeer]:
    with StandinPeer(tmp_path / "peer", rules=RULES) as running:
        yield running


# --------------------------------------------------------------------------- P2P path


def test_presigned_urls_differing_in_signature_share_one_task(origin: RangeOrigin, peer: StandinPeer) -> None:
    data = blob(9 * MiB + 7, seed=1)
    path = "/models/presigned/model.safetensors"
    origin.put(path, data)
    first = call(peer.port, "GET", origin.url_for(path, PRESIGN_A))
    second = call(peer.port, "GET", origin.url_for(path, PRESIGN_B))
    assert first.status == second.status == 200
    assert first.body == second.body == data
    tid = first.headers["X-Dragonfly-Task-ID"]
    assert tid == second.headers["X-Dragonfly-Task-ID"]
    assert tid == task_id(origin.url_for(path), filtered=DEFAULT_FILTERED_QUERY_PARAMS)
    assert first.headers.get("X-Dragonfly-Task-Download-Finished") is None
    assert second.headers["X-Dragonfly-Task-Download-Finished"] == "true"
    assert first.headers["X-Dragonfly-Server-IP"] == "127.0.0.1"
    assert first.headers["ETag"] == origin.etags[path]  # origin headers are replayed
    assert first.headers["Content-Length"] == str(len(data))
    stats = peer.stats()
    assert stats["origin_bytes"] == len(data)
    assert stats["stat_requests"] == 1  # the cached task is reused without contacting the origin
    assert sorted(piece_gets(origin, path)) == sorted(
        ["bytes=0-4194303", "bytes=4194304-8388607", f"bytes=8388608-{len(data) - 1}"]
    )
    assert stats["tasks"][tid]["pieces_done"] == 3


def test_concurrent_downloads_fetch_each_piece_once(origin: RangeOrigin, peer: StandinPeer) -> None:
    data = blob(64 * MiB, seed=2)
    path = "/models/concurrent/big.bin"
    origin.put(path, data)
    url = origin.url_for(path, PRESIGN_A)
    digests: list[str] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            reply = call(peer.port, "GET", url)
            assert reply.status == 200
            digests.append(hashlib.sha256(reply.body).hexdigest())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert digests == [hashlib.sha256(data).hexdigest()] * 8
    stats = peer.stats()
    assert stats["origin_bytes"] == len(data)
    assert stats["stat_requests"] == 1
    ranges = piece_gets(origin, path)
    assert len(ranges) == len(set(ranges)) == 16  # 64 MiB / 4 MiB, each piece once
    assert stats["served_bytes"] == 8 * len(data)


def test_range_get_returns_206_and_fetches_only_covering_pieces(origin: RangeOrigin, peer: StandinPeer) -> None:
    data = blob(20 * MiB, seed=3)
    path = "/models/range/weights.bin"
    origin.put(path, data)
    start, end = 9 * MiB, 9 * MiB + 999
    reply = call(peer.port, "GET", origin.url_for(path), {"Range": f"bytes={start}-{end}"})
    assert reply.status == 206
    assert reply.body == data[start:end + 1]
    assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert reply.headers["Content-Length"] == "1000"
    assert piece_gets(origin, path) == ["bytes=8388608-12582911"]  # piece 2 only, piece-aligned
    assert peer.stats()["direct_small"] == 1  # a 1000-byte range: the <= 4 MiB shortcut, still piece-aligned
    # Suffix range on the same task, spanning two pieces (> 4 MiB: the normal path).
    reply = call(peer.port, "GET", origin.url_for(path), {"Range": "bytes=-5242881"})
    assert reply.status == 206
    assert reply.body == data[-5242881:]
    assert peer.stats()["direct_small"] == 1


def test_invalid_range_is_500_dfdaemon_with_empty_body(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/range/small.bin"
    origin.put(path, blob(1000, seed=4))
    reply = call(peer.port, "GET", origin.url_for(path), {"Range": "bytes=5000-6000"})
    assert reply.status == 500
    assert reply.headers["X-Dragonfly-Error-Type"] == "dfdaemon"
    assert reply.body == b""


def test_origin_403_is_forwarded_with_backend_error_type_and_empty_body(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/denied/model.bin"
    origin.put(path, b"secret")
    origin.fail(path, 403, b"<Error><Code>AccessDenied</Code></Error>", headers=[("x-amz-request-id", "REQ403")])
    reply = call(peer.port, "GET", origin.url_for(path, PRESIGN_A))
    assert reply.status == 403
    assert reply.headers["X-Dragonfly-Error-Type"] == "backend"
    assert reply.headers["X-Amz-Request-Id"] == "REQ403"
    assert reply.body == b""
    # A failed stat creates no task: the next request stats again and succeeds.
    origin.clear_failures()
    assert call(peer.port, "GET", origin.url_for(path, PRESIGN_B)).body == b"secret"


def test_unreachable_origin_is_500_backend(peer: StandinPeer) -> None:
    reply = call(peer.port, "GET", "http://127.0.0.1:9/models/nowhere.bin")
    assert reply.status == 500
    assert reply.headers["X-Dragonfly-Error-Type"] == "backend"
    assert reply.body == b""


def test_zero_byte_object_after_416_stat(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/empty/config.pbtxt"
    origin.put(path, b"")
    reply = call(peer.port, "GET", origin.url_for(path))
    assert (reply.status, reply.body, reply.headers["Content-Length"]) == (200, b"", "0")
    assert [r.range for r in origin.requests_for(path)] == ["bytes=0-0", None]


def test_client_headers_are_forwarded_to_the_origin(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/headers/a.bin"
    origin.put(path, blob(100, seed=5))
    headers = {"Authorization": "Bearer t0k", "X-Dragonfly-Tag": "v7", "Range": "bytes=1-2", "Accept-Encoding": "identity"}
    reply = call(peer.port, "GET", origin.url_for(path), headers)
    assert reply.status == 206
    seen = origin.requests_for(path)
    assert [r.range for r in seen] == ["bytes=0-0", "bytes=0-99"]  # client's Range replaced by piece ranges
    for request in seen:
        assert request.headers["authorization"] == "Bearer t0k"
        assert request.headers["x-dragonfly-tag"] == "v7"
        assert request.headers["host"] == f"127.0.0.1:{origin.port}"


def test_tag_changes_task_id_and_defends_against_stale_cache(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/stale/model.onnx"
    old, new = blob(5 * MiB, seed=6), blob(5 * MiB, seed=7)
    origin.put(path, old)
    url = origin.url_for(path, PRESIGN_A)
    v1 = call(peer.port, "GET", url, {"X-Dragonfly-Tag": "etag-1"})
    assert v1.body == old
    origin.put(path, new)
    stale = call(peer.port, "GET", url, {"X-Dragonfly-Tag": "etag-1"})
    assert stale.body == old  # cached tasks are never revalidated (faithful)
    assert stale.headers["X-Dragonfly-Task-Download-Finished"] == "true"
    v2 = call(peer.port, "GET", url, {"X-Dragonfly-Tag": "etag-2"})
    assert v2.body == new
    assert v1.headers["X-Dragonfly-Task-ID"] != v2.headers["X-Dragonfly-Task-ID"]
    assert v2.headers["X-Dragonfly-Task-ID"] == task_id(
        origin.url_for(path), tag="etag-2", filtered=DEFAULT_FILTERED_QUERY_PARAMS
    )


def test_filter_header_replaces_default_list(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/filters/x.bin"
    origin.put(path, b"x" * 10)
    headers = {"X-Dragonfly-Filtered-Query-Params": "X-Amz-Date, foo"}
    one = call(peer.port, "GET", origin.url_for(path, "X-Amz-Signature=s1&X-Amz-Date=d1"), headers)
    two = call(peer.port, "GET", origin.url_for(path, "X-Amz-Signature=s2&X-Amz-Date=d2"), headers)
    assert one.headers["X-Dragonfly-Task-ID"] != two.headers["X-Dragonfly-Task-ID"]  # Signature no longer filtered
    assert one.headers["X-Dragonfly-Task-ID"] == task_id(
        origin.url_for(path, "X-Amz-Signature=s1&X-Amz-Date=d1"), filtered=["X-Amz-Date", "foo"]
    )


def test_content_for_calculating_task_id_and_application(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/content/x.bin"
    origin.put(path, b"abc")
    reply = call(peer.port, "GET", origin.url_for(path), {"X-Dragonfly-Content-For-Calculating-Task-ID": "s3://b/k@e1"})
    assert reply.headers["X-Dragonfly-Task-ID"] == hashlib.sha256(b"s3://b/k@e1").hexdigest()
    reply = call(peer.port, "GET", origin.url_for(path), {"X-Dragonfly-Application": "dfrepo"})
    assert reply.headers["X-Dragonfly-Task-ID"] == task_id(
        origin.url_for(path), application="dfrepo", filtered=DEFAULT_FILTERED_QUERY_PARAMS
    )


def test_piece_length_header(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/pieces/x.bin"
    data = blob(20 * MiB, seed=8)
    origin.put(path, data)
    small = call(peer.port, "GET", origin.url_for(path), {"X-Dragonfly-Piece-Length": "1mib"})
    assert (small.status, small.headers["X-Dragonfly-Error-Type"], small.body) == (500, "proxy", b"")
    reply = call(peer.port, "GET", origin.url_for(path), {"X-Dragonfly-Piece-Length": "8MiB"})
    assert reply.body == data
    tid = reply.headers["X-Dragonfly-Task-ID"]
    assert tid == task_id(origin.url_for(path), piece_length=8 * MiB, filtered=DEFAULT_FILTERED_QUERY_PARAMS)
    assert peer.stats()["tasks"][tid]["piece_count"] == 3
    assert len(piece_gets(origin, path)) == 3


def test_use_p2p_header_and_rules_gate_the_p2p_path(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/other/plain.bin"
    origin.put(path, b"plain-body")
    direct = call(peer.port, "GET", origin.url_for(path, "a=1"))
    assert direct.status == 200 and direct.body == b"plain-body"
    assert "X-Dragonfly-Task-ID" not in direct.headers
    assert origin.requests_for(path)[-1].range is None  # passed through unchanged
    assert origin.requests_for(path)[-1].query == "a=1"
    via = call(peer.port, "GET", origin.url_for(path), {"X-Dragonfly-Use-P2P": "TRUE"})
    assert via.headers["X-Dragonfly-Task-ID"]
    # A matching rule is not opted out by "false".
    origin.put("/models/gate/x.bin", b"x")
    ruled = call(peer.port, "GET", origin.url_for("/models/gate/x.bin"), {"X-Dragonfly-Use-P2P": "false"})
    assert ruled.headers["X-Dragonfly-Task-ID"]
    stats = peer.stats()
    assert (stats["passthrough_requests"], stats["p2p_requests"]) == (1, 2)


def test_head_and_put_pass_through(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/head/x.bin"
    origin.put(path, blob(3000, seed=9))
    head = call(peer.port, "HEAD", origin.url_for(path, PRESIGN_A), {"X-Dragonfly-Use-P2P": "true"})
    assert head.status == 200
    assert head.headers["Content-Length"] == "3000"
    assert "X-Dragonfly-Task-ID" not in head.headers
    assert [r.method for r in origin.requests_for(path)] == ["HEAD"]
    put = call(peer.port, "PUT", origin.url_for("/models/upload/y.bin"), {"X-Dragonfly-Use-P2P": "true"}, b"uploaded")
    assert put.status == 200
    assert origin.objects["/models/upload/y.bin"] == b"uploaded"
    missing = call(peer.port, "HEAD", origin.url_for("/models/head/missing.bin"))
    assert missing.status == 404
    assert peer.stats()["p2p_requests"] == 0


def test_reverse_proxy_mode_with_registry_header(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/mirror/x.bin"
    origin.put(path, b"mirrored")
    reply = call(peer.port, "GET", path + "?" + PRESIGN_A, {"X-Dragonfly-Registry": f"http://127.0.0.1:{origin.port}"})
    assert reply.body == b"mirrored"
    assert reply.headers["X-Dragonfly-Task-ID"] == task_id(origin.url_for(path), filtered=DEFAULT_FILTERED_QUERY_PARAMS)
    assert origin.requests_for(path)[0].headers["host"] == f"127.0.0.1:{origin.port}"
    no_registry = call(peer.port, "GET", path)
    assert (no_registry.status, no_registry.headers["X-Dragonfly-Error-Type"]) == (400, "proxy")


def test_canonicalization_a_peer(origin: RangeOrigin, tmp_path: Path) -> None:
    path = "/models/gen-a/x.bin"
    origin.put(path, b"a")
    url = origin.url_for(path, "z=9&b=2&a=1")
    with StandinPeer(tmp_path / "a", rules=RULES, canonicalization="A") as old_peer:
        reply = call(old_peer.port, "GET", url, {"X-Dragonfly-Filtered-Query-Params": "z"})
    assert reply.headers["X-Dragonfly-Task-ID"] == task_id(url, filtered=["z"], canonicalization="A")
    assert reply.headers["X-Dragonfly-Task-ID"] != task_id(url, filtered=["z"], canonicalization="B")


# --------------------------------------------------------------------------- parent (remote-peer hit)


def test_parent_mode_remote_peer_hit(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(12 * MiB + 5, seed=10)
    path = "/models/parent/model.bin"
    origin.put(path, data)
    with StandinPeer(tmp_path / "a", rules=RULES) as seed_peer, \
            StandinPeer(tmp_path / "b", parent=seed_peer.url, rules=RULES) as child:
        assert call(seed_peer.port, "GET", origin.url_for(path, PRESIGN_A)).body == data
        seed_before = seed_peer.stats()
        reply = call(child.port, "GET", origin.url_for(path, PRESIGN_B), {"X-Dragonfly-Tag": ""})
        assert reply.status == 200 and reply.body == data
        child_stats = child.stats()
        assert child_stats["origin_bytes"] == 0
        assert child_stats["parent_bytes"] == len(data)
        assert child_stats["traffic"]["REMOTE_PEER"] == len(data)
        assert child_stats["parent_failures"] == 0
        assert seed_peer.stats()["origin_bytes"] == seed_before["origin_bytes"]  # served from the seed's cache
        assert reply.headers["X-Dragonfly-Task-ID"] == seed_peer.stats()["tasks"].popitem()[0]
        # A second request on the child is a local hit.
        again = call(child.port, "GET", origin.url_for(path, PRESIGN_B))
        assert again.headers["X-Dragonfly-Task-Download-Finished"] == "true"
        assert child.stats()["parent_bytes"] == len(data)


def test_parent_failure_falls_back_to_origin(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(5 * MiB, seed=11)
    path = "/models/parent/fallback.bin"
    origin.put(path, data)
    with StandinPeer(tmp_path / "b", parent="http://127.0.0.1:9", rules=RULES) as child:
        reply = call(child.port, "GET", origin.url_for(path))
        assert reply.body == data
        stats = child.stats()
        assert stats["parent_failures"] == 2
        assert stats["origin_bytes"] == len(data)
        assert stats["parent_bytes"] == 0


# --------------------------------------------------------------------------- <= 4 MiB straight to the origin (v1.4.2+)
#
# dragonflyoss/client dragonfly-client/src/resource/task.rs `Task::download` (since v1.4.2, still in
# 1.5.x): after the locally stored pieces are served, `!disable_back_to_source && (range.length <=
# MIN_PIECE_LENGTH || content_length <= MIN_PIECE_LENGTH)` sends the missing pieces to
# `download_partial_from_source`, skipping the scheduler.  The task is still created by the
# bytes=0-0 stat, the response is the normal one (task ID, 206 for a range), and the pieces are
# stored, so the same peer serves them locally next time; but no peer ever gets them from
# another peer: every peer fetches them from the origin.


def _seeded(origin: RangeOrigin, path: str, data: bytes, seed_peer: StandinPeer) -> str:
    """Put *data* at *path* and let *seed_peer* (the parent) cache all of it; returns the task ID."""
    origin.put(path, data)
    reply = call(seed_peer.port, "GET", origin.url_for(path, PRESIGN_A))
    assert reply.status == 200 and reply.body == data
    return reply.headers["X-Dragonfly-Task-ID"]


def test_range_of_4mib_goes_to_the_origin_on_every_peer_and_4mib_plus_1_goes_p2p(
    origin: RangeOrigin, tmp_path: Path
) -> None:
    assert DIRECT_SOURCE_THRESHOLD == 4 * MiB
    data = blob(20 * MiB, seed=30)
    path = "/models/small/range.bin"
    url = origin.url_for(path, PRESIGN_B)
    four = {"Range": f"bytes={8 * MiB}-{12 * MiB - 1}"}  # exactly 4 MiB: piece 2
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer:
        tid = _seeded(origin, path, data, seed_peer)
        for name in ("b", "c"):  # each peer goes to the origin, although the parent has the piece
            with StandinPeer(tmp_path / name, parent=seed_peer.url, rules=RULES) as child:
                before = len(origin.requests_for(path))
                reply = call(child.port, "GET", url, four)
                assert reply.status == 206 and reply.body == data[8 * MiB:12 * MiB]
                assert reply.headers["Content-Range"] == f"bytes {8 * MiB}-{12 * MiB - 1}/{len(data)}"
                assert reply.headers["X-Dragonfly-Task-ID"] == tid  # still a task, same ID
                # The stat first (this peer lacks the task), then the piece from the origin.
                assert [r.range for r in origin.requests_for(path)[before:]] == ["bytes=0-0", "bytes=8388608-12582911"]
                stats = child.stats()
                assert (stats["direct_small"], stats["parent_requests"], stats["origin_bytes"]) == (1, 0, 4 * MiB)
                assert stats["traffic"]["REMOTE_PEER"] == 0
                # The piece was stored: the same range on the same peer is served locally.
                again = call(child.port, "GET", url, four)
                assert again.body == reply.body
                assert len(origin.requests_for(path)) == before + 2
                # 4 MiB + 1 byte is a P2P range: piece 2 is local, piece 3 comes from the parent.
                plus = call(child.port, "GET", url, {"Range": f"bytes={8 * MiB}-{12 * MiB}"})
                assert plus.status == 206 and plus.body == data[8 * MiB:12 * MiB + 1]
                stats = child.stats()
                assert (stats["direct_small"], stats["parent_requests"], stats["parent_bytes"]) == (1, 1, 4 * MiB)
                assert len(origin.requests_for(path)) == before + 2
        # The children's piece requests to the parent are uploads, not small proxy requests.
        assert seed_peer.stats()["direct_small"] == 0


def test_object_of_3mib_fetched_whole_by_two_peers_hits_the_origin_twice(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(3 * MiB, seed=31)
    path = "/models/small/config-and-vocab.bin"
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer, \
            StandinPeer(tmp_path / "child", parent=seed_peer.url, rules=RULES) as child:
        tid = _seeded(origin, path, data, seed_peer)
        reply = call(child.port, "GET", origin.url_for(path, PRESIGN_B))
        assert reply.status == 200 and reply.body == data
        assert "Content-Range" not in reply.headers
        assert reply.headers["Content-Length"] == str(len(data))
        assert reply.headers["X-Dragonfly-Task-ID"] == tid
        assert reply.headers.get("X-Dragonfly-Task-Download-Finished") is None
        whole = f"bytes=0-{len(data) - 1}"
        assert [r.range for r in origin.requests_for(path)] == ["bytes=0-0", whole, "bytes=0-0", whole]
        stats = child.stats()
        assert (stats["direct_small"], stats["parent_requests"]) == (1, 0)
        assert stats["traffic"] == {"BACK_TO_SOURCE": len(data), "REMOTE_PEER": 0, "LOCAL_PEER": 0}
        assert seed_peer.stats()["direct_small"] == 1  # the seed's own first fetch was small too
        # Same peer again: a local hit (the pieces were stored), no origin contact at all.
        again = call(child.port, "GET", origin.url_for(path, PRESIGN_B))
        assert again.body == data and again.headers["X-Dragonfly-Task-Download-Finished"] == "true"
        assert len(origin.requests_for(path)) == 4
        assert child.stats()["direct_small"] == 1


@pytest.mark.parametrize(("size", "range_header", "direct"), [
    (4 * MiB, None, True),  # object exactly 4 MiB
    (4 * MiB + 1, None, False),  # two pieces, whole object: P2P
    (4 * MiB + 1, "bytes=0-", False),  # the range is the whole 4 MiB + 1 object
    (4 * MiB + 1, "bytes=1-", True),  # 4 MiB exactly, spanning both pieces
    (20 * MiB, f"bytes={16 * MiB}-999999999", True),  # clamped to exactly 4 MiB
    (20 * MiB, f"bytes=-{4 * MiB}", True),  # suffix of exactly 4 MiB
    (20 * MiB, f"bytes=-{4 * MiB + 1}", False),
    (20 * MiB, "bytes=5-4", None),  # invalid: 500 dfdaemon, nothing fetched
])
def test_direct_source_threshold_is_inclusive(
    origin: RangeOrigin, tmp_path: Path, size: int, range_header: str | None, direct: bool | None
) -> None:
    data = blob(size, seed=32)
    path = f"/models/small/edge-{size}.bin"
    headers = {} if range_header is None else {"Range": range_header}
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer, \
            StandinPeer(tmp_path / "child", parent=seed_peer.url, rules=RULES) as child:
        _seeded(origin, path, data, seed_peer)
        reply = call(child.port, "GET", origin.url_for(path), headers)
        stats = child.stats()
        if direct is None:
            assert (reply.status, reply.headers["X-Dragonfly-Error-Type"]) == (500, "dfdaemon")
            assert (stats["direct_small"], stats["origin_bytes"], stats["parent_bytes"]) == (0, 0, 0)
            return
        start, end = parse_range(range_header, size) if range_header else (0, size - 1)
        assert reply.status == (206 if range_header else 200)
        assert reply.body == data[start:end + 1]
        assert stats["direct_small"] == int(direct)
        if direct:
            assert stats["parent_requests"] == 0 and stats["origin_bytes"] > 0
        else:
            assert stats["origin_bytes"] == 0 and stats["parent_bytes"] > 0


def test_small_to_source_off_restores_the_old_daemon_behaviour(origin: RangeOrigin, tmp_path: Path) -> None:
    small, big = blob(3 * MiB, seed=33), blob(20 * MiB, seed=34)
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer, \
            StandinPeer(tmp_path / "old", parent=seed_peer.url, rules=RULES, small_to_source=False) as old:
        _seeded(origin, "/models/small/old-small.bin", small, seed_peer)
        _seeded(origin, "/models/small/old-big.bin", big, seed_peer)
        assert call(old.port, "GET", origin.url_for("/models/small/old-small.bin")).body == small
        ranged = call(old.port, "GET", origin.url_for("/models/small/old-big.bin"), {"Range": "bytes=10-1009"})
        assert ranged.status == 206 and ranged.body == big[10:1010]
        stats = old.stats()
        assert stats["direct_small"] == 0
        assert stats["origin_bytes"] == 0  # only the two stats went to the origin
        assert stats["stat_requests"] == 2
        assert stats["parent_bytes"] == len(small) + 4 * MiB


def test_disable_back_to_source_never_takes_the_small_shortcut(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(3 * MiB, seed=35)
    path = "/models/small/no-b2s.bin"
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer, \
            StandinPeer(tmp_path / "child", parent=seed_peer.url, rules=RULES, disable_back_to_source=True) as child:
        _seeded(origin, path, data, seed_peer)
        assert call(child.port, "GET", origin.url_for(path)).body == data
        stats = child.stats()
        assert (stats["direct_small"], stats["origin_bytes"], stats["parent_bytes"]) == (0, 0, len(data))


def test_legacy_range_200(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(6 * MiB, seed=36)
    path = "/models/legacy/range.bin"
    origin.put(path, data)
    with StandinPeer(tmp_path / "old", rules=RULES, legacy_range_200=True) as old:
        reply = call(old.port, "GET", origin.url_for(path), {"Range": "bytes=100-199"})
        assert reply.status == 200  # dfdaemon < v1.3.11
        assert reply.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert reply.headers["Content-Length"] == "100" and reply.body == data[100:200]
        assert call(old.port, "GET", origin.url_for(path)).status == 200


def test_cli_flags_for_the_version_knobs() -> None:
    from dfpeer.__main__ import _parser

    defaults = _parser().parse_args(["--data-dir", "/tmp/x"])
    assert (defaults.small_to_source, defaults.legacy_range_200) == (True, False)
    old = _parser().parse_args(["--data-dir", "/tmp/x", "--no-small-to-source", "--legacy-range-200"])
    assert (old.small_to_source, old.legacy_range_200) == (False, True)


def test_subprocess_version_knobs(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(6 * MiB, seed=37)
    path = "/models/subprocess/knobs.bin"
    with StandinPeer(tmp_path / "seed", rules=RULES) as seed_peer:
        _seeded(origin, path, data, seed_peer)
        with PeerProcess(tmp_path / "new", parent=seed_peer.url, rules=RULES) as new:
            reply = call(new.port, "GET", origin.url_for(path), {"Range": "bytes=0-99"})
            assert reply.status == 206 and reply.body == data[:100]
            stats = new.stats()
            assert (stats["direct_small"], stats["parent_bytes"], stats["origin_bytes"]) == (1, 0, 4 * MiB)
        with PeerProcess(tmp_path / "old", parent=seed_peer.url, rules=RULES,
                         small_to_source=False, legacy_range_200=True) as old:
            reply = call(old.port, "GET", origin.url_for(path), {"Range": "bytes=0-99"})
            assert reply.status == 200 and reply.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
            assert reply.body == data[:100]
            stats = old.stats()
            assert (stats["direct_small"], stats["parent_bytes"], stats["origin_bytes"]) == (0, 4 * MiB, 0)


# --------------------------------------------------------------------------- faults, mid-stream failure, admin


def test_truncation_fault_produces_short_body(origin: RangeOrigin, peer: StandinPeer) -> None:
    data = blob(6 * MiB, seed=12)
    path = "/models/faults/trunc.bin"
    origin.put(path, data)
    peer.set_faults(truncate_after_bytes=5 * MiB + 3)
    cut = call(peer.port, "GET", origin.url_for(path))
    assert cut.status == 200 and not cut.complete
    assert cut.body == data[: 5 * MiB + 3]
    assert cut.headers["Content-Length"] == str(len(data))
    full = call(peer.port, "GET", origin.url_for(path))  # one-shot
    assert full.complete and full.body == data
    assert peer.stats()["aborted_responses"] == 1


def test_fail_next_fault(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/faults/fail.bin"
    origin.put(path, b"ok")
    peer.set_faults(fail_next=2, fail_status=503)
    for _ in range(2):
        reply = call(peer.port, "GET", origin.url_for(path))
        assert (reply.status, reply.headers["X-Dragonfly-Error-Type"], reply.body) == (503, "dfdaemon", b"")
    assert call(peer.port, "GET", origin.url_for(path)).body == b"ok"


def test_piece_failure_after_headers_aborts_the_connection(origin: RangeOrigin, tmp_path: Path) -> None:
    data = blob(10 * MiB, seed=13)
    path = "/models/faults/midstream.bin"
    origin.put(path, data)
    origin.fail(path, 500, b"boom", after=2, times=1)  # stat and piece 0 succeed, piece 1 fails
    with StandinPeer(tmp_path / "p", rules=RULES, concurrent_pieces=1) as one_at_a_time:
        reply = call(one_at_a_time.port, "GET", origin.url_for(path))
        assert reply.status == 200 and not reply.complete
        assert reply.body == data[: 4 * MiB]
        # The failed task is re-statted and completed by the next request; piece 0 is kept.
        again = call(one_at_a_time.port, "GET", origin.url_for(path))
        assert again.complete and again.body == data
        assert one_at_a_time.stats()["origin_bytes"] == len(data)


def test_first_piece_origin_error_is_forwarded(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/faults/first.bin"
    origin.put(path, blob(100, seed=14))
    origin.fail(path, 404, b"gone", after=1, times=1)  # stat passes, piece 0 gets 404
    reply = call(peer.port, "GET", origin.url_for(path))
    assert (reply.status, reply.headers["X-Dragonfly-Error-Type"], reply.body) == (404, "backend", b"")


def test_admin_api_over_http(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/admin/x.bin"
    origin.put(path, b"admin")
    call(peer.port, "GET", origin.url_for(path))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def admin(method: str, name: str, payload: object = None) -> dict[str, object]:
        data = None if payload is None else json.dumps(payload).encode()
        with opener.open(urllib.request.Request(f"{peer.url}/_dfpeer/{name}", data=data, method=method)) as resp:
            return dict(json.loads(resp.read()))

    stats = admin("GET", "stats")
    assert stats["served_bytes"] == 5 and len(stats["tasks"]) == 1  # type: ignore[arg-type]
    assert admin("POST", "faults", {"fail_next": 1})["fail_next"] == 1
    assert admin("DELETE", "faults")["fail_next"] == 0
    admin("POST", "reset-stats", {})
    assert admin("GET", "stats")["served_bytes"] == 0
    assert admin("DELETE", "tasks")["dropped"] == 1
    before = len(origin.requests_for(path))
    assert call(peer.port, "GET", origin.url_for(path)).body == b"admin"
    assert len(origin.requests_for(path)) == before + 2  # re-statted and re-fetched after the cache drop


def test_tasks_survive_a_restart(origin: RangeOrigin, tmp_path: Path) -> None:
    path = "/models/restart/x.bin"
    origin.put(path, blob(4 * MiB + 1, seed=15))
    with StandinPeer(tmp_path / "p", rules=RULES) as first:
        call(first.port, "GET", origin.url_for(path))
    with StandinPeer(tmp_path / "p", rules=RULES) as second:
        reply = call(second.port, "GET", origin.url_for(path))
        assert reply.headers["X-Dragonfly-Task-Download-Finished"] == "true"
        assert second.stats()["origin_requests"] == 0


def test_subprocess_mode(origin: RangeOrigin, tmp_path: Path) -> None:
    path = "/models/subprocess/x.bin"
    data = blob(5 * MiB, seed=16)
    origin.put(path, data)
    with PeerProcess(tmp_path / "p", rules=RULES) as child:
        reply = call(child.port, "GET", origin.url_for(path, PRESIGN_A))
        assert reply.body == data
        stats = child.stats()
        assert stats["origin_bytes"] == len(data) and stats["p2p_requests"] == 1
        child.set_faults(fail_next=1)
        assert call(child.port, "GET", origin.url_for(path)).status == 500
        assert child.clear_tasks() == 1


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl", "openssl not available to make a test certificate (apt package openssl)")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_origin_in_absolute_form(tls_context: ssl.SSLContext, tmp_path: Path) -> None:
    data = blob(5 * MiB, seed=17)
    with RangeOrigin(ssl_context=tls_context) as tls_origin, \
            StandinPeer(tmp_path / "p", rules=RULES) as tls_peer:
        tls_origin.put("/models/tls/x.bin", data)
        url = tls_origin.url_for("/models/tls/x.bin", PRESIGN_A)
        assert url.startswith("https://")
        reply = call(tls_peer.port, "GET", url)  # peer opens TLS itself; self-signed accepted (dfdaemon default)
        assert reply.status == 200 and reply.body == data
        head = call(tls_peer.port, "HEAD", url)
        assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
    with RangeOrigin(ssl_context=tls_context) as tls_origin, \
            StandinPeer(tmp_path / "v", rules=RULES, verify_origin=True) as verifying:
        tls_origin.put("/models/tls/x.bin", b"x")
        reply = call(verifying.port, "GET", tls_origin.url_for("/models/tls/x.bin"))
        assert (reply.status, reply.headers["X-Dragonfly-Error-Type"]) == (500, "backend")


def test_keep_alive_connection_serves_many_requests(origin: RangeOrigin, peer: StandinPeer) -> None:
    path = "/models/keepalive/x.bin"
    data = blob(300_000, seed=18)
    origin.put(path, data)
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=30)
    try:
        for index in range(5):
            conn.request("GET", origin.url_for(path), headers={"Range": f"bytes={index}-{index + 9}"})
            resp = conn.getresponse()
            assert resp.status == 206 and resp.read() == data[index:index + 10]
        conn.request("HEAD", origin.url_for(path))
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.request("GET", origin.url_for(path))
        assert conn.getresponse().read() == data
    finally:
        conn.close()
    assert os.path.isdir(peer.config.data_dir / "tasks")


def test_dfpeer_does_not_import_dfrepo() -> None:
    """The peer's task-ID code must stay independent of the client it is used to test."""
    code = "import sys, dfpeer, dfpeer.testing; print(sorted(m for m in sys.modules if m.startswith('dfrepo')))"
    peer_root = str(Path(__file__).resolve().parent.parent / "peer")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": peer_root})
    assert out.stdout.strip() == "[]"


_PLAIN = "abcdefghijklmnopqrstuvwxyz0123456789-._"


@settings(max_examples=200, deadline=None)
@given(
    residual=st.dictionaries(st.text(_PLAIN, min_size=1, max_size=8), st.text(_PLAIN, max_size=8), max_size=4),
    signature=st.text(_PLAIN + "ABCDEF/+=", min_size=1, max_size=20),
    date=st.text("0123456789TZ", min_size=1, max_size=16),
)
def test_generations_agree_on_presigned_urls_with_sorted_plain_params(
    residual: dict[str, str], signature: str, date: str
) -> None:
    """Reference §2.2: keep remaining params sorted and plain and A == B; signatures never matter."""
    residual = {k: v for k, v in residual.items() if k not in DEFAULT_FILTERED_QUERY_PARAMS}
    plain = "&".join(f"{k}={v}" for k, v in sorted(residual.items()))
    base = "https://bucket.s3.us-east-1.amazonaws.com/models/m/1/model.onnx"
    signed = f"{base}?{plain + '&' if plain else ''}X-Amz-Date={date}&X-Amz-Signature={quote(signature, safe='')}"
    expected = task_id(f"{base}?{plain}" if plain else base, filtered=DEFAULT_FILTERED_QUERY_PARAMS)
    for generation in ("A", "B"):
        assert task_id(signed, filtered=DEFAULT_FILTERED_QUERY_PARAMS, canonicalization=generation) == expected  # type: ignore[arg-type]


def test_random_ranges_across_piece_boundaries(origin: RangeOrigin, peer: StandinPeer) -> None:
    data = blob(13 * MiB + 17, seed=19)
    path = "/models/ranges/random.bin"
    origin.put(path, data)
    rng = random.Random(20261125)
    edges = [0, 4 * MiB - 1, 4 * MiB, 8 * MiB - 1, 8 * MiB, 12 * MiB, len(data) - 1]
    spans = [(a, b) for a in edges for b in edges if a <= b][:12]
    spans += sorted((rng.randrange(len(data)), rng.randrange(len(data))) for _ in range(12))
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=60)
    try:
        for start, end in spans:
            start, end = min(start, end), max(start, end)
            conn.request("GET", origin.url_for(path), headers={"Range": f"bytes={start}-{end}"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 206
            assert resp.getheader("Content-Range") == f"bytes {start}-{end}/{len(data)}"
            assert body == data[start:end + 1]
    finally:
        conn.close()
    ranges = piece_gets(origin, path)
    assert len(ranges) == len(set(ranges)) == 4  # every piece fetched once, however the ranges overlapped
    assert peer.stats()["origin_bytes"] == len(data)


def test_malformed_targets_are_400_proxy(peer: StandinPeer) -> None:
    for target in ("http:///models/no-host.bin", "ftp://127.0.0.1/models/x.bin"):
        reply = call(peer.port, "GET", target, {"Host": "x"})
        assert (reply.status, reply.headers["X-Dragonfly-Error-Type"], reply.body) == (400, "proxy", b"")
