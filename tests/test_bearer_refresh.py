"""Credentials that live in request headers are refreshed too (issue #15, bearer tokens).

A GCS object fetched with an OAuth access token (``Authorization: Bearer``, no signed URL)
must survive the token's expiry part-way through a pull: the re-signer returns a
:class:`dfrepo.Signed` with the same URL and a freshly minted token in its headers, and the
engine continues the file with both.  The Dragonfly task identity must not change (the
same P2P task is continued), and no token may reach a log line or a message.

The origin here is the stand-in peer's ``RangeOrigin`` taught three GCS tricks: it checks
bearer tokens on media downloads (each token authorizes a set number of GETs, then is
answered 401 as expired), it lists a bucket like the GCS JSON API, and it mints tokens
like Google's OAuth token endpoint (``POST /token``), so the real google-auth refresh runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from dfpeer import StandinPeer
from dfpeer.testing import OriginHandler, RangeOrigin
from dfrepo import Signed, errors
from dfrepo.credentials import GCSCredentials
from dfrepo.dragonfly import DragonflyConfig, request_headers, task_id_for_request
from dfrepo.engine import Downloader, DownloadRequest, TransferConfig
from dfrepo.engine.fs import FileSystem
from dfrepo.engine.jobs import MAX_REFRESHES, FileJob
from dfrepo.locations import parse_location
from dfrepo.pull import pull
from dfrepo.stores import list_model
from secrets_guard import extra_secrets

CFG = TransferConfig(fsync=False, range_size=64 * 1024, max_concurrency=4, max_attempts=3, backoff_base=0.01)
DATA = os.urandom(1024 * 1024 + 3)  # 17 ranges of 64 KiB
MiB = 1 << 20


class _GcsHandler(OriginHandler):
    """Media GETs need a live bearer token; the listing and the token endpoint do not."""

    @property
    def fake(self) -> BearerOrigin:
        return self.server.origin  # type: ignore[return-value]  # handler_class of a BearerOrigin

    def _target(self) -> tuple[str, str]:
        parts = urlsplit(self.path)  # origin-form, or absolute-form through a proxy
        return parts.path, parts.query

    def _get(self) -> None:
        path, query = self._target()
        if path.startswith("/storage/v1/b/") and path.endswith("/o"):
            self._record()
            self._list(unquote(path.split("/")[4]), parse_qs(query).get("prefix", [""])[0])
            return
        if not self.fake.authorize(self.headers.get("Authorization", "")):
            self._record()
            body = b'{"error": {"code": 401, "message": "Invalid Credentials"}}'
            self._send(401, [("Content-Type", "application/json"), ("WWW-Authenticate", 'Bearer realm="test"'),
                             ("Content-Length", str(len(body)))], body)
            return
        super()._get()

    def _list(self, bucket: str, prefix: str) -> None:
        items = [item for item in self.fake.listing.get(bucket, []) if item["name"].startswith(prefix)]
        body = json.dumps({"kind": "storage#objects", "items": items}).encode()
        self._send(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming; the OAuth token endpoint
        self._record()
        self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        body = json.dumps({"access_token": self.fake.grant(), "expires_in": 3600,
                           "token_type": "Bearer"}).encode()
        self._send(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body)


class BearerOrigin(RangeOrigin):
    """RangeOrigin whose media GETs need ``Authorization: Bearer <live token>``.

    ``grant()`` mints a token; it authorizes ``lifetimes.pop(0)`` GETs (or ``lifetime``
    once the queue is empty; None = unlimited) and is answered 401 after that.
    """

    handler_class = _GcsHandler

    def __init__(self) -> None:
        super().__init__()
        self.uses_left: dict[str, int | None] = {}
        self.lifetimes: list[int | None] = []
        self.lifetime: int | None = None
        self.minted: list[str] = []
        self.refused: list[str] = []
        self.authorized: list[str] = []
        self.listing: dict[str, list[dict[str, str]]] = {}

    def grant(self) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        extra_secrets(token)  # the guard fails the run if it shows up in any output
        with self.lock:
            self.uses_left[token] = self.lifetimes.pop(0) if self.lifetimes else self.lifetime
            self.minted.append(token)
        return token

    def authorize(self, header: str) -> bool:
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        with self.lock:
            if token not in self.uses_left or self.uses_left[token] == 0:
                self.refused.append(token)
                return False
            left = self.uses_left[token]
            if left is not None:
                self.uses_left[token] = left - 1
            self.authorized.append(token)
            return True

    def put_gcs(self, bucket: str, name: str, data: bytes, generation: int) -> None:
        self.put(f"/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}", data)
        self.listing.setdefault(bucket, []).append({
            "kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)),
            "generation": str(generation), "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode()})


@pytest.fixture
def origin() -> Iterator[BearerOrigin]:
    with BearerOrigin() as server:
        yield server


def _minter(origin: BearerOrigin, url: str) -> tuple[list[str], Any]:
    """A re-signer like the GCS store's bearer mode: same URL, a new token each call."""
    minted: list[str] = []

    def mint() -> Signed:
        minted.append(origin.grant())
        return Signed(url, {"Authorization": f"Bearer {minted[-1]}"})
    return minted, mint


def _no_token_in(texts: list[str], tokens: list[str]) -> None:
    for text in texts:
        for token in tokens:
            assert token not in text


# --------------------------------------------------------------------------- engine


def test_bearer_token_refused_mid_download_is_minted_again(impl: str, origin: BearerOrigin, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    url = origin.put("/download/storage/v1/b/bkt/o/w.bin", DATA) + "?alt=media&generation=7"
    origin.lifetimes = [3]  # token A serves three GETs, then "expires"
    token_a = origin.grant()
    minted, mint = _minter(origin, url)
    req = DownloadRequest(url=url, dest=tmp_path / "w.bin", size=len(DATA), md5=hashlib.md5(DATA).hexdigest(),
                          headers={"Authorization": f"Bearer {token_a}"}, refresh=mint)
    caplog.set_level(logging.DEBUG, logger="dfrepo")
    with Downloader(CFG, implementation=impl) as dl:
        (res,) = dl.download_many([req])
    assert (tmp_path / "w.bin").read_bytes() == DATA
    assert res.implementation == impl
    assert len(minted) == 1, "every range refused at once mints one new token for the file"
    assert res.retries == 0, "a request authorized afresh is not a retry of a broken one"
    assert token_a in origin.refused, "token A really expired mid-download"
    assert origin.authorized.count(token_a) == 3 and minted[0] in origin.authorized
    assert "fresh credentials" in caplog.text
    _no_token_in([caplog.text, repr(req), repr(Signed(url, {"Authorization": f"Bearer {minted[0]}"}))],
                 [token_a, *minted])


def test_a_token_minter_that_keeps_failing_is_bounded(impl: str, origin: BearerOrigin, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    url = origin.put("/download/storage/v1/b/bkt/o/w.bin", DATA) + "?alt=media"
    origin.lifetime = 0  # every token is refused (a revoked grant, not an expiry)
    minted, mint = _minter(origin, url)
    req = DownloadRequest(url=url, dest=tmp_path / "w.bin", size=len(DATA), refresh=mint,
                          headers={"Authorization": f"Bearer {origin.grant()}"})
    caplog.set_level(logging.DEBUG, logger="dfrepo")
    with Downloader(CFG, implementation=impl) as dl, pytest.raises(errors.HTTPStatusError) as ei:
        dl.download_many([req])
    assert ei.value.status == 401
    assert len(minted) == MAX_REFRESHES
    assert not (tmp_path / "w.bin").exists()
    _no_token_in([caplog.text, str(ei.value), repr(ei.value)], origin.minted)


def test_refresh_bound_and_headers_of_a_file_job(tmp_path: Path) -> None:
    """FileJob: the refresh replaces the request's own headers and keeps the engine's;
    a stale failure (another range refreshed already) does not mint again; the bound holds."""
    calls: list[int] = []

    def mint() -> Signed:
        calls.append(1)
        return Signed("http://o/x?alt=media", {"Authorization": f"Bearer T{len(calls)}"})

    req = DownloadRequest(url="http://o/x?alt=media", dest=tmp_path / "x",
                          headers={"Authorization": "Bearer T0", "X-Extra": "listed"}, refresh=mint)
    job = FileJob(req, {"User-Agent": "dfrepo/t", "X-Dragonfly-Tag": "7"}, FileSystem(), "rename")
    first, headers = job.auth
    assert headers == {"User-Agent": "dfrepo/t", "X-Dragonfly-Tag": "7", "Authorization": "Bearer T0",
                       "X-Extra": "listed"}
    assert job.refresh(first) and len(calls) == 1
    assert job.refresh(first), "a range that saw the old token continues with the new one"
    assert len(calls) == 1
    signed, headers = job.auth
    assert signed.url == first.url and job.url == first.url
    assert headers == {"User-Agent": "dfrepo/t", "X-Dragonfly-Tag": "7", "Authorization": "Bearer T1"}
    for _ in range(MAX_REFRESHES - 1):
        assert job.refresh(job.auth[0])
    assert not job.refresh(job.auth[0]), "bounded: MAX_REFRESHES fresh authorizations per file"
    assert len(calls) == MAX_REFRESHES and job.headers["Authorization"] == f"Bearer T{MAX_REFRESHES}"
    assert "Bearer" not in repr(job.auth[0]) and "Authorization" in repr(job.auth[0])

    legacy = DownloadRequest(url="http://o/x", dest=tmp_path / "y", refresh=lambda: "http://o/x?new")  # type: ignore[arg-type,return-value]
    legacy_job = FileJob(legacy, {}, FileSystem(), "rename")
    with pytest.raises(TypeError, match="Signed"):
        legacy_job.refresh(legacy_job.auth[0])


def test_new_credentials_keep_the_dragonfly_task_identity() -> None:
    """The task ID dfrepo predicts (and dfdaemon computes) ignores the Authorization header
    and the GCS V4 signature parameters."""
    df = DragonflyConfig(proxy="http://127.0.0.1:4001", tag="t")
    media = "https://storage.googleapis.com/download/storage/v1/b/bkt/o/m%2Fw.bin?alt=media&generation=7"
    base = request_headers(df, media, version="7")
    ids = {task_id_for_request(media, {**base, "Authorization": f"Bearer {t}"}) for t in ("A" * 40, "B" * 40)}
    assert len(ids) == 1 and ids == {task_id_for_request(media, base)}

    def v4(date: str, sig: str) -> str:
        return ("https://storage.googleapis.com/bkt/m/w.bin?generation=7&X-Goog-Algorithm=GOOG4-RSA-SHA256"
                f"&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F{date[:8]}%2Fauto%2Fstorage%2Fgoog4_request"
                f"&X-Goog-Date={date}&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature={sig}")
    old, new = v4("20260101T000000Z", "ab" * 8), v4("20260101T001500Z", "cd" * 8)
    assert (task_id_for_request(old, request_headers(df, old, version="7"))
            == task_id_for_request(new, request_headers(df, old, version="7")))


# --------------------------------------------------------------------------- through the stand-in peer


def test_bearer_refresh_through_the_peer_continues_the_same_task(impl: str, origin: BearerOrigin, peer: StandinPeer,
                                                                 tmp_path: Path) -> None:
    data = os.urandom(9 * MiB + 7)  # three 4 MiB pieces
    url = origin.put("/download/storage/v1/b/bkt/o/big.bin", data) + "?alt=media&generation=9"
    origin.lifetimes = [2]  # A: the peer's stat and one piece, then 401
    token_a = origin.grant()
    minted, mint = _minter(origin, url)
    df = DragonflyConfig(proxy=peer.url, fallback_direct=False)
    req = DownloadRequest(url=url, dest=tmp_path / "big.bin", size=len(data), md5=hashlib.md5(data).hexdigest(),
                          version="9", headers={"Authorization": f"Bearer {token_a}"}, refresh=mint)
    with Downloader(CFG, dragonfly=df, implementation=impl) as dl:
        (res,) = dl.download_many([req])
    assert (tmp_path / "big.bin").read_bytes() == data
    assert len(minted) == 1 and token_a in origin.refused
    assert minted[0] in origin.authorized, "the peer fetched the rest from the origin with the new token"
    tasks = peer.stats()["tasks"]
    assert list(tasks) == [res.task_id], "one P2P task before and after the new token"
    assert tasks[res.task_id]["finished"]
    assert res.task_id == res.predicted_task_id
    base = request_headers(df, url, version="9")
    assert res.task_id == task_id_for_request(url, {**base, "Authorization": f"Bearer {token_a}"})


# --------------------------------------------------------------------------- the GCS store


@pytest.fixture
def sa_key(origin: BearerOrigin, tmp_path: Path) -> str:
    """A service-account key whose token endpoint is the fake origin."""
    from test_credentials import make_sa_key_file  # type: ignore[import-not-found]

    path = Path(make_sa_key_file(tmp_path))
    info = json.loads(path.read_text())
    info["token_uri"] = f"http://127.0.0.1:{origin.port}/token"
    path.write_text(json.dumps(info))
    return str(path)


def test_gcs_bearer_token_expiring_mid_pull_is_minted_again(impl: str, origin: BearerOrigin, sa_key: str,
                                                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = {"config.pbtxt": b'name: "m"\n', "1/model.bin": DATA, "1/extra.bin": os.urandom(300_000)}
    for gen, (rel, data) in enumerate(files.items(), start=100):
        origin.put_gcs("bkt", f"repo/m/{rel}", data, gen)
    loc = parse_location("gs://bkt/repo/m", gcs_endpoint=f"http://127.0.0.1:{origin.port}")
    objs = list_model(loc, GCSCredentials(service_account_path=sa_key), signing="bearer")
    assert len(origin.minted) == 1, "the listing minted token A"
    token_a = origin.minted[0]
    assert all(o.headers == {"Authorization": f"Bearer {token_a}"} and o.resign is not None for o in objs)
    assert token_a not in repr(objs)
    with origin.lock:
        origin.uses_left[token_a] = 4  # A expires a few GETs into the pull
    caplog.set_level(logging.DEBUG, logger="dfrepo")
    res = pull(loc, tmp_path / "out", objects=objs, dragonfly=DragonflyConfig(), transfer=CFG, env={},
               implementation=impl)
    assert res.files == len(files)
    for rel, data in files.items():
        assert (tmp_path / "out").joinpath(*rel.split("/")).read_bytes() == data
    assert token_a in origin.refused
    assert len(origin.minted) == 2, "one credentials.refresh for every file refused at once"
    token_b = origin.minted[1]
    assert token_b in origin.authorized
    _no_token_in([caplog.text, repr(res)], [token_a, token_b])


def test_gcs_bearer_refresh_failure_is_a_clean_credentials_error(origin: BearerOrigin, sa_key: str,
                                                                 tmp_path: Path) -> None:
    origin.put_gcs("bkt", "repo/m/w.bin", b"x" * 10, 1)
    loc = parse_location("gs://bkt/repo/m", gcs_endpoint=f"http://127.0.0.1:{origin.port}")
    (obj,) = list_model(loc, GCSCredentials(service_account_path=sa_key), signing="bearer")
    assert obj.resign is not None
    origin.close()  # the token endpoint is gone
    with pytest.raises(errors.CredentialsError, match="fresh GCS access token") as ei:
        obj.resign()
    assert ei.value.__cause__ is None and ei.value.__context__ is not None
    _no_token_in([str(ei.value)], origin.minted)


def test_gcs_bearer_tokens_are_refreshed_once_for_all_files(origin: BearerOrigin, sa_key: str) -> None:
    for i in range(3):
        origin.put_gcs("bkt", f"repo/m/f{i}", b"x" * 10, i + 1)
    loc = parse_location("gs://bkt/repo/m", gcs_endpoint=f"http://127.0.0.1:{origin.port}")
    objs = list_model(loc, GCSCredentials(service_account_path=sa_key), signing="bearer")
    barrier = threading.Barrier(len(objs))
    got: list[Signed] = []

    def refresh(obj: Any) -> None:
        barrier.wait()
        got.append(obj.resign())

    threads = [threading.Thread(target=refresh, args=(o,)) for o in objs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(origin.minted) == 2
    assert {s.headers["Authorization"] for s in got} == {f"Bearer {origin.minted[1]}"}
    assert [s.url for s in sorted(got, key=lambda s: s.url)] == sorted(o.url for o in objs)
    fresh = objs[0].resign()  # refused again with the new token: a newer one
    assert fresh.headers["Authorization"] == f"Bearer {origin.minted[2]}" and len(origin.minted) == 3


class CountingCredentials:
    """What the GCS store uses of a google-auth credential (``valid``, ``token``,
    ``refresh``), counting refreshes and how many ran at once. A refresh takes a moment, so
    threads that find the token expired together overlap unless they take turns."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.expired = False
        self.refreshes = 0
        self.running = 0
        self.most_at_once = 0
        self._books = threading.Lock()  # the fake's own bookkeeping

    @property
    def valid(self) -> bool:
        return self.token is not None and not self.expired

    def refresh(self, request: Any) -> None:
        with self._books:
            self.refreshes += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            minted = f"token-{self.refreshes}"
        time.sleep(0.05)
        self.token, self.expired = minted, False
        with self._books:
            self.running -= 1


def test_gcs_token_refresh_is_one_at_a_time_and_shared() -> None:
    """The download threads share one listing's credential: iam signing asks for a valid
    token, bearer re-signing for one newer than the refused one. One refresh at a time, and
    the threads that waited take the token it minted instead of refreshing again."""
    from dfrepo.stores.gcs import _Tokens

    fake = CountingCredentials()
    tokens = _Tokens(fake, GCSCredentials())

    def together(calls: list[Callable[[], str]]) -> list[str]:
        barrier = threading.Barrier(len(calls))
        got: list[str] = []

        def call(fn: Callable[[], str]) -> None:
            barrier.wait()
            got.append(fn())

        threads = [threading.Thread(target=call, args=(fn,)) for fn in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got

    def bearer_after(refused: str) -> Callable[[], str]:
        sign = tokens.resigner("http://gcs.invalid/download/storage/v1/b/b/o/x?alt=media", refused)
        return lambda: sign().headers["Authorization"].removeprefix("Bearer ")

    assert together([tokens.current] * 8) == ["token-1"] * 8  # no token yet
    assert fake.refreshes == 1
    assert tokens.current() == "token-1" and fake.refreshes == 1  # valid: nothing to mint
    fake.expired = True
    assert together([tokens.current] * 4 + [bearer_after("token-1") for _ in range(4)]) == ["token-2"] * 8
    assert fake.refreshes == 2 and fake.most_at_once == 1


# --------------------------------------------------------------------------- dfdaemon's gRPC route


def test_grpc_route_refreshes_a_refused_token(tmp_path: Path) -> None:
    """The gRPC route (the daemon fetches from the origin itself) continues the file with
    the fresh URL and headers when the origin refused the daemon's request."""
    from dfrepo.dragonfly.daemon_grpc import GrpcDelivery
    from dfrepo.engine.daemon import DaemonRoute
    from dfrepo.engine.retry import RetryPolicy

    url = "https://storage.googleapis.com/download/storage/v1/b/bkt/o/w.bin?alt=media&generation=3"
    df = DragonflyConfig(transport="grpc", headers={"X-Operator": "1"})
    calls: list[tuple[str, dict[str, str]]] = []

    class FakeDaemon:
        def download(self, got_url: str, output: Path, *, version: str | None,
                     headers: dict[str, str]) -> GrpcDelivery:
            calls.append((got_url, dict(headers)))
            if headers.get("Authorization") == "Bearer old-token-0123456789":
                raise errors.HTTPStatusError("origin (via Dragonfly gRPC) answered HTTP 401", status=401,
                                             url=got_url, error_type="backend")
            output.write_bytes(b"payload")
            return GrpcDelivery(task_id=task_id_for_request(url, job.headers), content_length=7, local_hit=False,
                                linked=False, pieces=1)

    minted: list[str] = []

    def mint() -> Signed:
        minted.append("new-token-0123456789")
        return Signed(url, {"Authorization": f"Bearer {minted[-1]}"})

    route = DaemonRoute.__new__(DaemonRoute)
    route.dragonfly, route.daemon, route.reason, route._lock = df, FakeDaemon(), None, threading.Lock()  # type: ignore[assignment]
    req = DownloadRequest(url=url, dest=tmp_path / "w.bin", size=7, version="3",
                          headers={"Authorization": "Bearer old-token-0123456789"}, refresh=mint)
    job = FileJob(req, request_headers(df, url, version="3"), FileSystem(), "rename")
    assert route.fetch(job, RetryPolicy(2, 0.01, 0.01), lambda reason: None)
    assert [c[1]["Authorization"] for c in calls] == ["Bearer old-token-0123456789", "Bearer new-token-0123456789"]
    assert all(c[0] == url and c[1]["X-Operator"] == "1" for c in calls)
    assert len(minted) == 1 and job.size == 7 and Path(job.path or "").read_bytes() == b"payload"
    assert job.predicted_task_id == task_id_for_request(url, request_headers(df, url, version="3"))
    assert job.task_id == job.predicted_task_id, "the same task before and after the new token"
