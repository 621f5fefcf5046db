"""Smoke tests for the managed real servers in tests/servers (they are test infrastructure)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from servers.azure import AzuriteServer
from servers.gcs import FakeGcsServer
from servers.models import make_toy_model, payload_bytes_for
from servers.nginx import NginxOrigin
from servers.s3 import S3Server
from servers.upload import upload_tree_azure, upload_tree_gcs, upload_tree_s3

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ------------------------------------------------------------------------------------------
# object stores
# ------------------------------------------------------------------------------------------
@pytest.mark.servers
@pytest.mark.parametrize("store", ["seaweedfs", "moto_s3"])
def test_s3_roundtrip_and_request_log(store: str, request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue(store)
    client = server.client()
    bucket = f"smoke-{store.replace('_', '-')}"
    client.create_bucket(Bucket=bucket)
    server.clear_log()
    client.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello world")
    body = client.get_object(Bucket=bucket, Key="dir/hello.txt", Range="bytes=6-")["Body"].read()
    assert body == b"world"
    log = server.request_log()
    assert ("PUT", f"/{bucket}/dir/hello.txt") in log
    assert ("GET", f"/{bucket}/dir/hello.txt") in log
    assert server.requests()[-1].headers.get("range") == "bytes=6-"
    server.clear_log()
    assert server.request_log() == []


@pytest.mark.servers
def test_s3_relay_streams_large_body_intact(seaweedfs: S3Server, tmp_path: Path) -> None:
    data = os.urandom(24 << 20)
    client = seaweedfs.client()
    client.create_bucket(Bucket="smoke-large")
    client.put_object(Bucket="smoke-large", Key="big.bin", Body=data)
    url = client.generate_presigned_url("get_object", Params={"Bucket": "smoke-large", "Key": "big.bin"})
    status, got = _get(url)
    assert status == 200
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    status, part = _get(url, {"Range": "bytes=1000-1999"})
    assert (status, part) == (206, data[1000:2000])


@pytest.mark.servers
def test_seaweedfs_checks_signatures(seaweedfs: S3Server) -> None:
    from botocore.exceptions import ClientError

    client = seaweedfs.client()
    client.create_bucket(Bucket="smoke-auth")
    client.put_object(Bucket="smoke-auth", Key="k", Body=b"secret bytes")
    url = client.generate_presigned_url("get_object", Params={"Bucket": "smoke-auth", "Key": "k"})
    assert _get(url) == (200, b"secret bytes")

    head, sig = url.split("X-Amz-Signature=")
    tampered = head + "X-Amz-Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert _get(tampered)[0] == 403
    assert _get(f"{seaweedfs.endpoint}/smoke-auth/k")[0] == 403  # anonymous

    bad = S3Server(
        "seaweedfs", seaweedfs.access_key, "wrong-secret", seaweedfs.process, seaweedfs.relay, seaweedfs.direct_port
    ).client()
    with pytest.raises(ClientError):
        bad.get_object(Bucket="smoke-auth", Key="k")


@pytest.mark.servers
def test_azurite_roundtrip(azurite: AzuriteServer) -> None:
    assert azurite.endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    service = azurite.service_client()
    container = service.create_container("smoke")
    container.upload_blob("dir/hello.txt", b"hello azure")
    assert container.download_blob("dir/hello.txt").readall() == b"hello azure"
    assert container.download_blob("dir/hello.txt", offset=6, length=5).readall() == b"azure"


@pytest.mark.servers
def test_fake_gcs_roundtrip(fake_gcs: FakeGcsServer) -> None:
    client = fake_gcs.client()
    bucket = client.create_bucket("smoke")
    bucket.blob("dir/hello.txt").upload_from_string(b"hello gcs")
    assert client.bucket("smoke").blob("dir/hello.txt").download_as_bytes() == b"hello gcs"
    status, body = _get(f"{fake_gcs.endpoint}/storage/v1/b/smoke/o/dir%2Fhello.txt?alt=media", {"Range": "bytes=6-"})
    assert (status, body) == (206, b"gcs")


@pytest.mark.servers
def test_nginx_origin_ranges_and_access_log(nginx_origin: NginxOrigin) -> None:
    data = os.urandom(1 << 20)
    (nginx_origin.root / "blob.bin").write_bytes(data)
    nginx_origin.clear_log()
    assert _get(nginx_origin.url("blob.bin")) == (200, data)
    assert _get(nginx_origin.url("blob.bin"), {"Range": "bytes=10-19"}) == (206, data[10:20])
    assert _get(nginx_origin.url("missing"))[0] == 404
    assert nginx_origin.access_log() == [
        "GET /blob.bin HTTP/1.1",
        "GET /blob.bin HTTP/1.1",
        "GET /missing HTTP/1.1",
    ]
    assert [e.status for e in nginx_origin.access_entries()] == [200, 206, 404]


@pytest.mark.servers
def test_upload_helpers(tmp_path: Path, seaweedfs: S3Server, fake_gcs: FakeGcsServer, azurite: AzuriteServer) -> None:
    make_toy_model(tmp_path, "toy", payload_bytes=4096, agent="dragonfly", agent_params={"k": "v"})
    expected = ["repo/toy/1/model.py", "repo/toy/1/weights.bin", "repo/toy/config.pbtxt", "repo/toy/labels.txt"]
    assert upload_tree_s3(seaweedfs, "up-s3", "repo", tmp_path) == expected
    assert upload_tree_gcs(fake_gcs, "up-gcs", "/repo/", tmp_path) == expected
    assert upload_tree_azure(azurite, "up-azure", "repo", tmp_path) == expected

    weights = payload_bytes_for("toy", 4096)
    assert (tmp_path / "toy/1/weights.bin").read_bytes() == weights
    s3_body = seaweedfs.client().get_object(Bucket="up-s3", Key="repo/toy/1/weights.bin")["Body"].read()
    assert s3_body == weights
    assert fake_gcs.client().bucket("up-gcs").blob("repo/toy/1/weights.bin").download_as_bytes() == weights
    cc = azurite.service_client().get_container_client("up-azure")
    assert cc.download_blob("repo/toy/1/weights.bin").readall() == weights
    assert (
        'model_repository_agents { agents [ { name: "dragonfly" parameters [ { key: "k" value: "v" } ] } ] }'
        in (tmp_path / "toy/config.pbtxt").read_text()
    )


# ------------------------------------------------------------------------------------------
# Triton
# ------------------------------------------------------------------------------------------
@pytest.mark.triton
def test_triton_local_repository(triton_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    make_toy_model(repo, "toy_add", add=1.0, payload_bytes=100_000)
    triton = triton_server(str(repo))
    assert triton.is_live()
    assert not triton.is_ready("toy_add")  # explicit mode: nothing loaded yet
    status, text = triton.load("toy_add")
    assert status == 200, text + triton.log()[-3000:]
    assert triton.is_ready("toy_add")
    assert triton.infer_fp32("toy_add", "INPUT0", [1, 2, 3, 4], "OUTPUT0") == [2, 3, 4, 5]
    assert "[toy_model toy_add] initialize" in triton.log()
    assert triton.unload("toy_add")[0] == 200


@pytest.mark.triton
def test_triton_rejects_corrupt_payload(triton_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    model = make_toy_model(repo, "toy_bad", payload_bytes=4096)
    with open(model / "1" / "weights.bin", "r+b") as f:
        f.write(b"X")
    triton = triton_server(str(repo))
    status, text = triton.load("toy_bad")
    assert status == 400 and "checksum mismatch" in text
    assert not triton.is_ready("toy_bad")


@pytest.mark.triton
@pytest.mark.servers
def test_triton_s3_repository_on_seaweedfs(triton_server, seaweedfs: S3Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "repo"
    make_toy_model(local, "toy_s3", add=2.5, payload_bytes=65536)
    upload_tree_s3(seaweedfs, "triton-models", "repo", local)
    seaweedfs.clear_log()
    triton = triton_server(seaweedfs.s3_url("triton-models", "repo"), env=seaweedfs.triton_env())
    status, text = triton.load("toy_s3")
    assert status == 200, text + triton.log()[-3000:]
    assert triton.infer_fp32("toy_s3", "INPUT0", [0, 1, 2, 3], "OUTPUT0") == [2.5, 3.5, 4.5, 5.5]
    # Triton's own S3 client fetched the model files through the recording relay.
    gets = {path for method, path in seaweedfs.request_log() if method == "GET"}
    assert "/triton-models/repo/toy_s3/1/weights.bin" in gets
    assert "/triton-models/repo/toy_s3/1/model.py" in gets


@pytest.mark.triton
@pytest.mark.servers
def test_triton_gs_repository_on_fake_gcs(triton_server, fake_gcs: FakeGcsServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "repo"
    make_toy_model(local, "toy_gs", add=-1.0)
    upload_tree_gcs(fake_gcs, "triton-models", "repo", local)
    triton = triton_server("gs://triton-models/repo", env=fake_gcs.triton_env())
    status, text = triton.load("toy_gs")
    assert status == 200, text + triton.log()[-3000:]
    assert triton.infer_fp32("toy_gs", "INPUT0", [1, 1, 1, 1], "OUTPUT0") == [0, 0, 0, 0]


@pytest.mark.triton
@pytest.mark.servers
def test_triton_as_repository_on_azurite_tls(triton_server, azurite_tls, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "repo"
    make_toy_model(local, "toy_as", add=10.0)
    upload_tree_azure(azurite_tls, "triton-models", "repo", local)
    triton = triton_server(
        f"as://{azurite_tls.account}/triton-models/repo",
        env=azurite_tls.triton_env(),
        mounts=azurite_tls.triton_mounts(),
    )
    status, text = triton.load("toy_as")
    assert status == 200, text + triton.log()[-3000:]
    assert triton.infer_fp32("toy_as", "INPUT0", [0, 1, 2, 3], "OUTPUT0") == [10, 11, 12, 13]
