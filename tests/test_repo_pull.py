"""dfrepo.pull against real S3 servers, through the stand-in Dragonfly peer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine.settings import TransferConfig
from dfrepo.pull import pull
from modelfiles import make_model, tree, upload

pytestmark = pytest.mark.servers

MiB = 1024 * 1024


CFG = TransferConfig(range_size=1 * MiB, concurrency=4, fsync=False)




def test_pull_direct_byte_exact(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = make_model(tmp_path / "src")
    upload(seaweedfs, "pull-direct", "repo/m", tmp_path / "src")
    res = pull(seaweedfs.s3_url("pull-direct", "repo/m"), tmp_path / "out", env=s3env, transfer=CFG)
    assert tree(tmp_path / "out") == files
    assert res.files == 5 and res.bytes == sum(map(len, files.values()))
    assert res.via == "direct"


def test_pull_through_peer_shares_one_origin_fetch(seaweedfs, s3env, peer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = make_model(tmp_path / "src", weights=9 * MiB)
    upload(seaweedfs, "pull-peer", "repo/m", tmp_path / "src")
    df = DragonflyConfig(proxy=peer.url)
    seaweedfs.clear_log()
    first = pull(seaweedfs.s3_url("pull-peer", "repo/m"), tmp_path / "a", env=s3env, dragonfly=df, transfer=CFG)
    assert tree(tmp_path / "a") == files
    assert first.via == "proxy" and first.bytes_from_peer + first.bytes_from_peer_cache == first.bytes
    origin_after_first = peer.stats()["origin_bytes"]
    # A second "node" pulling the same model (new presigned URLs, new signatures) is
    # served entirely by the peer: same task IDs, no new origin bytes.
    second = pull(seaweedfs.s3_url("pull-peer", "repo/m"), tmp_path / "b", env=s3env, dragonfly=df, transfer=CFG)
    assert tree(tmp_path / "b") == files
    assert peer.stats()["origin_bytes"] == origin_after_first
    assert second.bytes_from_peer_cache == second.bytes
    gets = [p for m, p in seaweedfs.request_log() if m == "GET" and "weights.bin" in p]
    assert gets, "the peer, not the client, must have fetched from the store"


def test_overwritten_object_is_never_served_stale(seaweedfs, s3env, peer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_model(tmp_path / "src", weights=5 * MiB, seed=1)
    upload(seaweedfs, "pull-stale", "repo/m", tmp_path / "src")
    df = DragonflyConfig(proxy=peer.url)
    pull(seaweedfs.s3_url("pull-stale", "repo/m"), tmp_path / "a", env=s3env, dragonfly=df, transfer=CFG)
    new = make_model(tmp_path / "src2", weights=5 * MiB, seed=2)
    upload(seaweedfs, "pull-stale", "repo/m", tmp_path / "src2")
    pull(seaweedfs.s3_url("pull-stale", "repo/m"), tmp_path / "b", env=s3env, dragonfly=df, transfer=CFG)
    assert tree(tmp_path / "b") == new


def test_peer_down_falls_back_or_fails_clearly(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = make_model(tmp_path / "src", weights=2 * MiB)
    upload(seaweedfs, "pull-down", "repo/m", tmp_path / "src")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    res = pull(seaweedfs.s3_url("pull-down", "repo/m"), tmp_path / "a", env=s3env,
               dragonfly=DragonflyConfig(proxy=dead), transfer=CFG)
    assert tree(tmp_path / "a") == files
    assert res.via == "direct" and res.fallback_reason and "unreachable" in res.fallback_reason
    with pytest.raises(errors.ProxyUnavailableError):
        pull(seaweedfs.s3_url("pull-down", "repo/m"), tmp_path / "b", env=s3env,
             dragonfly=DragonflyConfig(proxy=dead, fallback_direct=False), transfer=CFG)
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if "dfrepo-stage" in p.name]


def test_wrong_secret_is_a_credentials_error(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_model(tmp_path / "src", weights=1000)
    upload(seaweedfs, "pull-creds", "repo/m", tmp_path / "src")
    env = dict(s3env, AWS_SECRET_ACCESS_KEY="wrong-secret-value")
    with pytest.raises(errors.CredentialsError) as ei:
        pull(seaweedfs.s3_url("pull-creds", "repo/m"), tmp_path / "a", env=env, transfer=CFG)
    assert "wrong-secret-value" not in str(ei.value)
    assert not (tmp_path / "a").exists()


def test_missing_model_is_not_found(seaweedfs, s3env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_model(tmp_path / "src", weights=1000)
    upload(seaweedfs, "pull-missing", "repo/m", tmp_path / "src")
    with pytest.raises(errors.ObjectNotFoundError):
        pull(seaweedfs.s3_url("pull-missing", "repo/nope"), tmp_path / "a", env=s3env, transfer=CFG)


def test_destination_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "x").write_text("keep")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    with pytest.raises(errors.ConfigError):
        pull(str(tmp_path / "src"), tmp_path / "dest")
    assert (tmp_path / "dest" / "x").read_text() == "keep"


def test_local_location_is_linked(tmp_path: Path) -> None:
    files = make_model(tmp_path / "src", weights=1000)
    res = pull(str(tmp_path / "src"), tmp_path / "out")
    assert tree(tmp_path / "out") == files and res.bytes_local == res.bytes


def test_unknown_override_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    with pytest.raises(errors.ConfigError) as ei:
        pull(str(tmp_path / "src"), tmp_path / "dest", overrides={"concurency": "4"})
    assert ei.value.key == "concurency"
    assert not (tmp_path / "dest").exists()


def test_overrides_apply_on_top_of_a_given_config(tmp_path: Path) -> None:
    from dfrepo.triton.parameters import split_overrides

    df, tr, pl = split_overrides({"proxy": "http://127.0.0.1:1", "concurrency": "2", "cache": "off"})
    assert df == {"proxy": "http://127.0.0.1:1"} and tr == {"concurrency": "2"} and pl == {"cache": "off"}
