"""Empty directories survive listing and pulling (issue #15): S3/GCS ``dir/`` markers,
Azure ``dir/`` blobs and HNS folder blobs (``hdi_isfolder=true``), empty local dirs.

An ensemble's version directory ``1/`` is empty; without it Triton refuses the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dfrepo.credentials import AzureCredentials, GCSCredentials, S3Credentials
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine.settings import TransferConfig
from dfrepo.errors import ObjectNotFoundError, UnsafePathError
from dfrepo.locations import parse_location
from dfrepo.objects import RemoteObject
from dfrepo.pull import pull
from dfrepo.stores import list_model
from dfrepo.stores._common import finish

CFG = TransferConfig(range_size=256 * 1024, concurrency=2, fsync=False)
FILES = {"config.pbtxt": b'name: "ens"\nplatform: "ensemble"\n', "2/notes.txt": b"v2\n"}


def _write(root: Path) -> None:
    for rel, data in FILES.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _check(objs: list[RemoteObject], dirs: list[str], dest: Path, location: Any) -> None:
    assert sorted(o.rel_path for o in objs if not o.is_dir) == sorted(FILES)
    assert [o.rel_path for o in objs if o.is_dir] == dirs  # "2" has a file: no entry
    assert all(o.size == 0 and o.url == "" and o.resign is None for o in objs if o.is_dir)
    res = pull(location, dest, objects=objs, dragonfly=DragonflyConfig(), transfer=CFG, env={})
    assert res.files == len(FILES)
    for name in dirs:
        assert (dest / name).is_dir() and not any((dest / name).iterdir())
    for rel, data in FILES.items():
        assert dest.joinpath(*rel.split("/")).read_bytes() == data


def test_finish_keeps_only_empty_dirs() -> None:
    d = RemoteObject.directory
    out = finish([RemoteObject("a/x", 1, "u"), d("a"), d("b"), d("b"), d("c/d")], "s3://x")
    assert [(o.rel_path, o.is_dir) for o in out] == [("a/x", False), ("b", True), ("c/d", True)]
    assert "is_dir=True" in repr(out[1])
    with pytest.raises(UnsafePathError, match="both a file and a directory"):
        finish([RemoteObject("a", 1, "u"), d("a")], "s3://x")
    with pytest.raises(UnsafePathError, match="both a file and the directory"):
        finish([RemoteObject("a", 1, "u"), d("a/b")], "s3://x")
    with pytest.raises(ObjectNotFoundError, match="no objects"):
        finish([d("a")], "s3://x")  # directories alone are not a model


def test_local_empty_dir(tmp_path: Path) -> None:
    _write(tmp_path / "m")
    (tmp_path / "m" / "1").mkdir()
    objs = list_model(str(tmp_path / "m"))
    _check(objs, ["1"], tmp_path / "out", str(tmp_path / "m"))


@pytest.mark.servers
@pytest.mark.parametrize("server_name", ["seaweedfs", "moto_s3"])
def test_s3_dir_markers(server_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from servers import upload  # type: ignore[import-not-found]

    server = request.getfixturevalue(server_name)
    _write(tmp_path / "m")
    upload.upload_tree_s3(server, "dirs", "repo/ens", tmp_path / "m")
    client = server.client()
    for key in ("repo/ens/", "repo/ens/1/", "repo/ens/2/", "repo/ens/3/empty/"):
        client.put_object(Bucket="dirs", Key=key, Body=b"")
    loc = f"s3://{server.host}:{server.port}/dirs/repo/ens"
    creds = S3Credentials(key_id=server.access_key, secret_key=server.secret_key, region=server.region)
    objs = list_model(loc, creds)
    _check(objs, ["1", "3/empty"], tmp_path / "out", loc)


@pytest.fixture(scope="module")
def fake_gcs_memory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """fake-gcs-server with the memory backend (the filesystem one drops ``dir/`` objects)."""
    from servers.gcs import start_fake_gcs  # type: ignore[import-not-found]

    try:
        server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs-mem"), backend="memory")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.mark.servers
def test_gcs_dir_markers(fake_gcs_memory: Any, tmp_path: Path) -> None:
    from servers import upload

    fake_gcs = fake_gcs_memory
    _write(tmp_path / "m")
    upload.upload_tree_gcs(fake_gcs, "dirs", "repo/ens", tmp_path / "m")
    bucket = fake_gcs.client().bucket("dirs")
    for key in ("repo/ens/", "repo/ens/1/", "repo/ens/2/"):
        bucket.blob(key).upload_from_string(b"")
    loc = parse_location("gs://dirs/repo/ens", gcs_endpoint=fake_gcs.endpoint)
    _check(list_model(loc, GCSCredentials()), ["1"], tmp_path / "out", loc)


@pytest.mark.servers
def test_azure_dir_markers_and_hns_folders(azurite: Any, tmp_path: Path) -> None:
    from servers import upload

    _write(tmp_path / "m")
    upload.upload_tree_azure(azurite, "dirs", "repo/ens", tmp_path / "m")
    cc = azurite.service_client().get_container_client("dirs")
    cc.upload_blob("repo/ens/1/", b"", overwrite=True)  # a plain marker
    folder = {"hdi_isfolder": "true"}  # what ADLS Gen2 (HNS) lists for a directory
    for name in ("repo/ens", "repo/ens/2", "repo/ens/3"):
        cc.upload_blob(name, b"", overwrite=True, metadata=folder)
    loc = parse_location(f"as://{azurite.account}/dirs/repo/ens", azure_endpoint=azurite.endpoint)
    creds = AzureCredentials(account_name=azurite.account, account_key=azurite.key, auth_type="key")
    _check(list_model(loc, creds), ["1", "3"], tmp_path / "out", loc)
