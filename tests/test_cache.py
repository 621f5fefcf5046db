"""dfrepo.cache.ModelCache: content-addressed, verified, LRU-bounded, multi-process safe.

Unit tests use local files; the pull tests run against SeaweedFS (request log) and the
stand-in Dragonfly peer.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dfrepo import errors
from dfrepo.cache import (
    DEFAULT_MAX_BYTES,
    ModelCache,
    cache_key,
    default_cache_dir,
)
from dfrepo.engine.settings import TransferConfig
from dfrepo.objects import RemoteObject
from dfrepo.values import parse_size
from modelfiles import make_model, tree, upload

SRC = str(Path(__file__).resolve().parents[1] / "src")
MiB = 1024 * 1024
CFG = TransferConfig(range_size=1 * MiB, concurrency=4, fsync=False)








def obj(rel: str, data: bytes, version: str | None = "v1", *, source: str | None = None,
        md5: str | None = None, sig: str = "secret-sig") -> RemoteObject:
    return RemoteObject(rel_path=rel, size=len(data),
                        url=f"http://127.0.0.1:9/bucket/{rel}?X-Amz-Signature={sig}",
                        version=version, md5=md5, source=source or f"s3://bucket/{rel}")


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- keys and settings


def test_key_ignores_signature_and_tracks_version() -> None:
    a = obj("m/w.bin", b"x" * 10, sig="one")
    b = obj("m/w.bin", b"x" * 10, sig="two")
    assert cache_key(a) == cache_key(b) is not None
    assert cache_key(obj("m/w.bin", b"x" * 10, version="v2")) != cache_key(a)
    assert cache_key(obj("m/w.bin", b"x" * 11)) != cache_key(a)
    assert cache_key(obj("m/w.bin", b"x" * 10, md5="0" * 32)) != cache_key(a)
    assert cache_key(obj("m/w.bin", b"x" * 10, source="s3://other/w.bin")) != cache_key(a)
    # ETag quoting does not matter; no version evidence means "never cached".
    assert cache_key(obj("m/w.bin", b"x" * 10, version='"v1"')) == cache_key(a)
    assert cache_key(obj("m/w.bin", b"x" * 10, version=None)) is None
    assert cache_key(obj("m/w.bin", b"x" * 10, version="  ")) is None


def test_settings_from_environment(tmp_path: Path) -> None:
    assert default_cache_dir({"DFREPO_CACHE_DIR": str(tmp_path / "a")}) == tmp_path / "a"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "dfrepo"
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "dfrepo"
    assert parse_size("20GiB") == parse_size("20G") == 20 * 1024**3
    assert parse_size("1.5 MB") == 1_500_000 and parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("lots")
    c = ModelCache(env={"DFREPO_CACHE_DIR": str(tmp_path / "env"), "DFREPO_CACHE_MAX_BYTES": "3MiB"})
    assert c.root == tmp_path / "env" and c.max_bytes == 3 * 1024 * 1024
    assert ModelCache(tmp_path / "d", env={}).max_bytes == DEFAULT_MAX_BYTES
    assert ModelCache(tmp_path / "d", max_bytes=7, env={"DFREPO_CACHE_MAX_BYTES": "1G"}).max_bytes == 7
    with pytest.raises(errors.ConfigError):
        ModelCache(tmp_path / "d", env={"DFREPO_CACHE_MAX_BYTES": "huge"})
    with pytest.raises(errors.ConfigError):
        ModelCache(tmp_path / "d", verify="sometimes")
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(errors.CacheError):
        ModelCache(tmp_path / "file")


# --------------------------------------------------------------------------- hits and misses


def test_store_then_materialize_is_a_hard_link(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    data = os.urandom(50_000)
    src = put(tmp_path / "dl" / "w.bin", data)
    o = obj("w.bin", data)
    assert not cache.materialize(o, tmp_path / "miss")
    cache.store(o, src)
    assert src.read_bytes() == data, "store must leave the downloaded file in place"
    # Same object, freshly signed URL: a hit, hard-linked.
    again = obj("w.bin", data, sig="another-signature")
    dest = tmp_path / "model" / "1" / "w.bin"
    assert cache.materialize(again, dest)
    assert dest.read_bytes() == data
    assert os.stat(dest).st_ino == os.stat(src).st_ino
    assert not os.stat(dest).st_mode & 0o222, "cached content is read-only"
    [entry] = cache.entries()
    assert entry.size == len(data) and entry.version == "v1" and entry.source == "s3://bucket/w.bin"
    assert entry.last_used >= entry.created
    sidecar = json.loads(entry.path.with_name(entry.key + ".json").read_text())
    assert "secret-sig" not in json.dumps(sidecar) and "Signature" not in json.dumps(sidecar)
    assert cache.usage() == (1, len(data))


def test_unversioned_and_oversized_objects_are_not_cached(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", max_bytes=100)
    src = put(tmp_path / "a", b"a" * 10)
    cache.store(obj("a", b"a" * 10, version=None), src)
    big = put(tmp_path / "big", b"b" * 101)
    cache.store(obj("big", b"b" * 101), big)
    # a file that does not have the listed size is not trusted either
    cache.store(RemoteObject("c", 5, "http://h/c", version="v", source="s3://b/c"), src)
    assert cache.usage() == (0, 0)


def test_new_version_is_a_miss(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    cache.store(obj("w", b"old!"), put(tmp_path / "old", b"old!"))
    assert not cache.materialize(obj("w", b"new!", version="v2"), tmp_path / "out")
    assert cache.materialize(obj("w", b"old!"), tmp_path / "out")


def test_truncated_entry_is_removed_and_missed(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    data = os.urandom(4096)
    o = obj("w", data)
    cache.store(o, put(tmp_path / "dl", data))
    [entry] = cache.entries()
    os.chmod(entry.path, 0o644)
    with open(entry.path, "r+b") as fh:
        fh.truncate(100)
    assert not cache.materialize(o, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert cache.entries() == [] and not entry.path.exists()
    assert not entry.path.with_name(entry.key + ".json").exists()


def test_full_verify_catches_same_size_corruption(tmp_path: Path) -> None:
    data = os.urandom(4096)
    for verify, hit in (("size", True), ("full", False)):
        cache = ModelCache(tmp_path / verify, verify=verify)
        o = obj("w", data)  # no store MD5: "full" records its own at insert
        cache.store(o, put(tmp_path / f"dl-{verify}", data))
        [entry] = cache.entries()
        if verify == "full":
            assert entry.md5 is not None
        os.chmod(entry.path, 0o644)
        with open(entry.path, "r+b") as fh:
            fh.write(b"\0" * 16)
        assert cache.materialize(o, tmp_path / f"out-{verify}") is hit


def test_missing_sidecar_is_a_miss(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    o = obj("w", b"data")
    cache.store(o, put(tmp_path / "dl", b"data"))
    [entry] = cache.entries()
    entry.path.with_name(entry.key + ".json").unlink()
    assert not cache.materialize(o, tmp_path / "out")
    assert not entry.path.exists()


def test_copy_when_linking_is_impossible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    cache = ModelCache(tmp_path / "cache")
    data = os.urandom(100_000)
    src = put(tmp_path / "dl", data)

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    o = obj("w", data)
    cache.store(o, src)
    [entry] = cache.entries()
    assert os.stat(entry.path).st_ino != os.stat(src).st_ino and entry.path.read_bytes() == data
    assert cache.materialize(o, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert os.stat(tmp_path / "out").st_ino != os.stat(entry.path).st_ino


# --------------------------------------------------------------------------- eviction and maintenance


def test_lru_eviction_respects_max_bytes(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", max_bytes=3000)
    objs = {n: obj(n, bytes([i]) * 1000) for i, n in enumerate("abcd")}
    for n in "abc":
        cache.store(objs[n], put(tmp_path / "dl" / n, bytes([ord(n) - 97]) * 1000))
        time.sleep(0.01)
    assert cache.usage() == (3, 3000)
    assert cache.materialize(objs["a"], tmp_path / "out" / "a")  # a is now the most recent
    time.sleep(0.01)
    cache.store(objs["d"], put(tmp_path / "dl" / "d", bytes([3]) * 1000))
    assert {e.source.rsplit("/", 1)[1] for e in cache.entries()} == {"a", "c", "d"}, "b was least recently used"
    assert cache.usage() == (3, 3000)
    assert (tmp_path / "out" / "a").read_bytes() == bytes([0]) * 1000
    # prune to a smaller bound evicts in LRU order too
    assert cache.prune(max_bytes=1000) == (2, 2000)
    assert [e.source for e in cache.entries()] == ["s3://bucket/d"]


def test_prune_older_than_and_clear(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    for n in "ab":
        cache.store(obj(n, n.encode() * 10), put(tmp_path / n, n.encode() * 10))
    a = next(e for e in cache.entries() if e.source.endswith("/a"))
    sidecar = a.path.with_name(a.key + ".json")
    meta = json.loads(sidecar.read_text())
    meta["last_used"] = time.time() - 3 * 86400
    sidecar.write_text(json.dumps(meta))
    assert cache.prune(older_than=86400) == (1, 10)
    assert [e.source for e in cache.entries()] == ["s3://bucket/b"]
    assert cache.clear() == (1, 10)
    assert cache.usage() == (0, 0)
    assert json.loads((tmp_path / "cache" / "usage.json").read_text()) == {"count": 0, "bytes": 0}


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    key = "ab" * 32
    stale = put(tmp_path / "cache" / "tmp" / f"{key}.0123456789ab.part", b"half a file")
    held = put(tmp_path / "cache" / "tmp" / f"{key}.ba9876543210.part", b"in progress")
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer
    try:
        assert cache.entries() == []
        assert not cache.materialize(obj("w", b"half a file"), tmp_path / "out")
        assert cache.prune() == (0, 0)
        assert not stale.exists(), "a temp file nobody holds is a leftover: removed"
        assert held.exists(), "a temp file a live insert holds is left alone"
    finally:
        os.close(fd)
    ModelCache(tmp_path / "cache")  # opening the cache cleans leftovers too
    assert not held.exists()


# --------------------------------------------------------------------------- processes


_INSERT_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {src!r})
    from pathlib import Path
    from dfrepo.cache import ModelCache
    from dfrepo.objects import RemoteObject
    root, work, start = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    cache = ModelCache(root)
    items = []
    for i in range(25):
        data = bytes([i]) * (1000 + i)
        p = work / f"f{{i}}"
        p.write_bytes(data)
        items.append((RemoteObject(f"f{{i}}", len(data), "http://h/f?sig=x", version="v", source=f"s3://b/f{{i}}"), p))
    while time.time() < start:
        time.sleep(0.001)
    for o, p in items:
        cache.store(o, p)
    print("ok")
""")


def test_two_processes_insert_the_same_keys(tmp_path: Path) -> None:
    script = _INSERT_SCRIPT.format(src=SRC)
    start = time.time() + 1.5
    procs = []
    for n in range(2):
        work = tmp_path / f"work{n}"
        work.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), str(work), str(start)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err
    cache = ModelCache(tmp_path / "cache")
    entries = cache.entries()
    assert len(entries) == 25 and len({e.key for e in entries}) == 25
    for e in entries:
        i = int(e.source.rsplit("f", 1)[1])
        assert e.path.read_bytes() == bytes([i]) * (1000 + i)
    assert os.listdir(tmp_path / "cache" / "tmp") == []
    assert json.loads((tmp_path / "cache" / "usage.json").read_text()) == {
        "count": 25, "bytes": sum(1000 + i for i in range(25))}


_KILLED_SCRIPT = textwrap.dedent("""
    import errno, os, sys, time
    sys.path.insert(0, {src!r})
    from pathlib import Path
    import dfrepo.cache.model_cache as c
    from dfrepo.objects import RemoteObject

    def no_link(*a, **k):
        raise OSError(errno.EXDEV, "cross-device")

    def slow_copy(src, dst, size):
        os.pwrite(dst, os.pread(src, size // 2, 0), 0)
        Path(sys.argv[3]).write_text("copying")
        time.sleep(60)

    os.link = no_link
    c.copy_fd = slow_copy
    data = Path(sys.argv[2]).read_bytes()
    o = RemoteObject("w", len(data), "http://h/w?sig=x", version="v", source="s3://b/w")
    c.ModelCache(sys.argv[1]).store(o, Path(sys.argv[2]))
""")


def test_killed_insert_leaves_no_entry(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    src = put(tmp_path / "dl", data)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT.format(src=SRC), str(tmp_path / "cache"),
                             str(src), str(ready)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [n for n in os.listdir(tmp_path / "cache" / "tmp") if n.endswith(".part")]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    o = RemoteObject("w", len(data), "http://h/w?sig=y", version="v", source="s3://b/w")
    cache = ModelCache(tmp_path / "cache")
    assert os.listdir(tmp_path / "cache" / "tmp") == [], "the dead writer's temp file is cleaned"
    assert cache.entries() == [] and not cache.materialize(o, tmp_path / "out")
    cache.store(o, src)
    assert cache.materialize(o, tmp_path / "out") and (tmp_path / "out").read_bytes() == data


# --------------------------------------------------------------------------- pull() with a cache




def _gets(seaweedfs) -> list[str]:  # type: ignore[no-untyped-def]
    """Object GETs the store saw (the listing excluded)."""
    return [p for m, p in seaweedfs.request_log() if m == "GET" and "list-type=" not in p]


@pytest.mark.servers
def test_second_pull_is_served_from_cache(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dfpeer import StandinPeer
    from dfrepo.dragonfly import DragonflyConfig
    from dfrepo.pull import pull

    files = make_model(tmp_path / "src", weights=3 * 1024 * 1024)
    upload(seaweedfs, "pull-cache", "repo/m", tmp_path / "src")
    cache = ModelCache(tmp_path / "cache")
    url = seaweedfs.s3_url("pull-cache", "repo/m")
    with StandinPeer(tmp_path / "peer") as peer:
        df = DragonflyConfig(proxy=peer.url)
        first = pull(url, tmp_path / "a", env=s3env, dragonfly=df, transfer=CFG, cache=cache)
        assert first.bytes_from_cache == 0 and cache.usage() == (5, first.bytes)
        served = peer.stats()["served_bytes"]
        seaweedfs.clear_log()
        second = pull(url, tmp_path / "b", env=s3env, dragonfly=df, transfer=CFG, cache=cache)
        assert peer.stats()["served_bytes"] == served, "nothing went through the peer"
    assert tree(tmp_path / "b") == files
    assert second.bytes_from_cache == second.bytes and second.requests == 0
    assert second.bytes_from_origin == second.bytes_from_peer == second.bytes_from_peer_cache == 0
    assert _gets(seaweedfs) == [], "only the listing may reach the store"
    assert [m for m, _ in seaweedfs.request_log() if m != "GET"] == []
    for rel in files:
        assert os.stat(tmp_path / "a" / rel).st_ino == os.stat(tmp_path / "b" / rel).st_ino


@pytest.mark.servers
def test_overwritten_object_is_fetched_again(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dfrepo.pull import pull

    make_model(tmp_path / "src", weights=200_000, seed=1)
    upload(seaweedfs, "pull-cache-stale", "repo/m", tmp_path / "src")
    cache = ModelCache(tmp_path / "cache")
    url = seaweedfs.s3_url("pull-cache-stale", "repo/m")
    pull(url, tmp_path / "a", env=s3env, transfer=CFG, cache=cache)
    new = make_model(tmp_path / "src2", weights=200_000, seed=2)
    upload(seaweedfs, "pull-cache-stale", "repo/m", tmp_path / "src2")
    seaweedfs.clear_log()
    res = pull(url, tmp_path / "b", env=s3env, transfer=CFG, cache=cache)
    assert tree(tmp_path / "b") == new
    # unchanged files (same ETag) are hits; the two rewritten ones are downloaded
    changed = {"1/weights.bin", "2/sub/extra.bin"}
    assert res.bytes_from_cache == sum(len(d) for r, d in new.items() if r not in changed)
    assert sorted(p.split("?")[0].rsplit("/", 1)[1] for p in _gets(seaweedfs)) == ["extra.bin", "weights.bin"]


@pytest.mark.servers
def test_corrupt_entry_is_downloaded_again(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dfrepo.pull import pull

    files = make_model(tmp_path / "src", weights=300_000)
    upload(seaweedfs, "pull-cache-bad", "repo/m", tmp_path / "src")
    cache = ModelCache(tmp_path / "cache")
    url = seaweedfs.s3_url("pull-cache-bad", "repo/m")
    pull(url, tmp_path / "a", env=s3env, transfer=CFG, cache=cache)
    entry = next(e for e in cache.entries() if e.source.endswith("weights.bin"))
    os.chmod(entry.path, 0o644)
    with open(entry.path, "r+b") as fh:
        fh.truncate(1000)  # (this also truncates the hard-linked copy in "a")
    seaweedfs.clear_log()
    res = pull(url, tmp_path / "b", env=s3env, transfer=CFG, cache=cache)
    assert tree(tmp_path / "b") == files
    assert res.bytes_from_origin == len(files["1/weights.bin"])
    assert [p.split("?")[0].rsplit("/", 1)[1] for p in _gets(seaweedfs)] == ["weights.bin"]
    fresh = next(e for e in cache.entries() if e.source.endswith("weights.bin"))
    assert fresh.size == len(files["1/weights.bin"]) and fresh.path.read_bytes() == files["1/weights.bin"]


@pytest.mark.servers
def test_two_processes_pull_the_same_model_into_one_cache(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = make_model(tmp_path / "src", weights=2 * MiB)
    upload(seaweedfs, "pull-cache-race", "repo/m", tmp_path / "src")
    url = seaweedfs.s3_url("pull-cache-race", "repo/m")
    env = dict(s3env, PYTHONPATH=SRC, DFREPO_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "dfrepo", "pull", url, str(tmp_path / f"out{n}"), "--json",
                               "--range-size", "1MiB"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for n in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert json.loads(out)["files"] == 5
    for n in range(2):
        assert tree(tmp_path / f"out{n}") == files
    cache = ModelCache(tmp_path / "cache")
    entries = cache.entries()
    assert sorted(e.source.split("/repo/m/")[1] for e in entries) == sorted(files)
    for e in entries:
        assert e.path.read_bytes() == files[e.source.split("/repo/m/")[1]]
    assert os.listdir(tmp_path / "cache" / "tmp") == []
    assert cache.usage() == (5, sum(map(len, files.values())))
