"""Store listings: unit tests, then real servers on 127.0.0.1 (SeaweedFS, moto, Azurite, fake-gcs)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dfrepo.credentials import AzureCredentials, GCSCredentials, S3Credentials
from dfrepo.errors import (
    ConfigError,
    CredentialsError,
    LocationError,
    ObjectNotFoundError,
    StoreError,
    UnsafePathError,
)
from dfrepo.locations import parse_location
from dfrepo.objects import RemoteObject
from dfrepo.stores import gcs, list_model
from dfrepo.stores._common import b64_to_hex, finish, s3_etag_md5
from dfrepo.values import normalize_etag

BIN_SIZE = 3 * 1024 * 1024 + 17


def make_model_dir(root: Path) -> dict[str, bytes]:
    """A small Triton model dir: config, labels, two versions, a few-MiB binary."""
    files = {
        "config.pbtxt": b'name: "toy"\nbackend: "onnxruntime"\n',
        "labels.txt": b"cat\ndog\n",
        "1/model.onnx": os.urandom(BIN_SIZE),
        "2/model.onnx": os.urandom(4096),
        "2/assets/vocab with space.txt": "ünïcode\n".encode(),
    }
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def fetch(obj: RemoteObject) -> tuple[int, bytes]:
    import urllib3

    with urllib3.PoolManager() as pool:
        resp = pool.request("GET", obj.url, headers=obj.headers, timeout=30, retries=False)
        return resp.status, resp.data


def check_listing(objs: list[RemoteObject], files: dict[str, bytes]) -> None:
    assert [o.rel_path for o in objs] == sorted(files)
    for obj in objs:
        data = files[obj.rel_path]
        assert obj.size == len(data)
        status, body = fetch(obj)
        assert status == 200, (obj.rel_path, status)
        assert body == data, obj.rel_path
        if obj.md5 is not None:
            assert obj.md5 == hashlib.md5(data).hexdigest()
        assert obj.version
        assert "?" not in obj.source and "Signature" not in repr(obj)


# =========================================================================== unit


def test_common_helpers() -> None:
    assert normalize_etag('"abc"') == "abc" and normalize_etag('W/"x"') == "x" and normalize_etag(None) is None
    assert s3_etag_md5("0123456789abcdef0123456789ABCDEF") == "0123456789abcdef0123456789abcdef"
    assert s3_etag_md5("0123456789abcdef0123456789abcdef-2") is None
    digest = hashlib.md5(b"x").digest()
    assert b64_to_hex(base64.b64encode(digest).decode()) == digest.hex()
    assert b64_to_hex(bytearray(digest)) == digest.hex()
    assert b64_to_hex("!!") is None and b64_to_hex(None) is None


def test_finish_sorts_and_rejects_clashes() -> None:
    a = RemoteObject("b", 1, "u")
    b = RemoteObject("a/x", 1, "u")
    assert [o.rel_path for o in finish([a, b], "s3://x")] == ["a/x", "b"]
    with pytest.raises(ObjectNotFoundError, match="no objects under s3://x/"):
        finish([], "s3://x")
    with pytest.raises(UnsafePathError, match="both a file and the directory"):
        finish([RemoteObject("a", 1, "u"), RemoteObject("a/b", 1, "u")], "s3://x")


@pytest.mark.parametrize("expiry", [0, -1, 604801, 1.5, True])
def test_bad_expiry(expiry: Any) -> None:
    with pytest.raises(ConfigError):
        list_model("s3://b/x", S3Credentials(key_id="a", secret_key="b"), expiry=expiry)


def test_wrong_credential_type() -> None:
    with pytest.raises(CredentialsError, match="needs S3Credentials"):
        list_model("s3://b/x", GCSCredentials())


def test_s3_quirk_refused_before_network() -> None:
    with pytest.raises(LocationError) as exc:
        list_model("s3://127.0.0.1:9/models/a b", S3Credentials(key_id="a", secret_key="b"))
    assert "127.0.0.1:9" in str(exc.value) and "Triton" in str(exc.value)


def test_s3_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        list_model("s3://127.0.0.1:9/models/x", S3Credentials())


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoints() -> None:
    port = _dead_port()
    with pytest.raises(StoreError, match="cannot reach"):
        list_model(f"s3://127.0.0.1:{port}/models/x", S3Credentials(key_id="a", secret_key="b"),
                   timeout=2)
    with pytest.raises(StoreError, match="cannot reach"):
        list_model(parse_location("as://devstoreaccount1/models/x",
                                  azure_endpoint=f"http://127.0.0.1:{port}/devstoreaccount1"),
                   AzureCredentials(account_name="devstoreaccount1",
                                    account_key=base64.b64encode(b"k" * 32).decode(),
                                    auth_type="key"), timeout=2)
    with pytest.raises(StoreError):
        list_model(parse_location("gs://models/x", gcs_endpoint=f"http://127.0.0.1:{port}"),
                   GCSCredentials(), timeout=2)


def test_azure_bad_key_is_credentials_error() -> None:
    with pytest.raises(CredentialsError, match="not valid base64") as exc:
        list_model("as://acct/models/x",
                   AzureCredentials(account_name="acct", account_key="not*base64!SECRET",
                                    auth_type="key"))
    assert "SECRET" not in str(exc.value)


# --------------------------------------------------------------------------- local


def test_local_store(tmp_path: Path) -> None:
    files = make_model_dir(tmp_path / "m")
    (tmp_path / "m" / "emptydir").mkdir()
    objs = list_model(str(tmp_path / "m"))
    assert [o.rel_path for o in objs if o.is_dir] == ["emptydir"]  # kept (issue #15)
    objs = [o for o in objs if not o.is_dir]
    assert [o.rel_path for o in objs] == sorted(files)
    for obj in objs:
        assert obj.url.startswith("file:///")
        assert obj.size == len(files[obj.rel_path])
        assert obj.version
    url_objs = [o for o in list_model((tmp_path / "m").as_uri()) if not o.is_dir]
    assert [o.url for o in url_objs] == [o.url for o in objs]


def test_local_store_symlinks(tmp_path: Path) -> None:
    make_model_dir(tmp_path / "m")
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"shared")
    os.symlink(shared, tmp_path / "m" / "linked.bin")
    os.symlink(tmp_path / "m", tmp_path / "m" / "1" / "loop")  # a cycle is skipped
    os.symlink(tmp_path / "missing", tmp_path / "m" / "dangling")
    objs = {o.rel_path: o for o in list_model(str(tmp_path / "m"))}
    assert objs["linked.bin"].url == shared.as_uri()
    assert not any(r.startswith("1/loop/1/loop") for r in objs)


def test_local_store_missing(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list_model(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ObjectNotFoundError, match="not a directory"):
        list_model(str(tmp_path / "f"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjectNotFoundError):
        list_model(str(tmp_path / "empty"))


def test_import_loads_no_sdk() -> None:
    code = (
        "import sys, dfrepo.stores, dfrepo.credentials, dfrepo.locations;"
        "bad=[m for m in ('boto3','botocore','google.cloud.storage','google.auth','azure.storage.blob',"
        "'azure.identity') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# =========================================================================== servers


def _upload(kind: str, server: Any, bucket: str, prefix: str, local: Path) -> None:
    from servers import upload  # type: ignore[import-not-found]

    fn = {"s3": upload.upload_tree_s3, "gs": upload.upload_tree_gcs,
          "as": upload.upload_tree_azure}[kind]
    fn(server, bucket, prefix, local)


@pytest.fixture(params=["seaweedfs", "moto_s3"])
def s3_server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _s3_creds(server: Any, **kw: Any) -> S3Credentials:
    args = {"key_id": server.access_key, "secret_key": server.secret_key, "region": server.region}
    args.update(kw)
    return S3Credentials(**args)


def _s3_loc(server: Any, bucket: str, prefix: str) -> str:
    return f"s3://{server.host}:{server.port}/{bucket}/{prefix}"


@pytest.fixture
def s3_model(s3_server: Any, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Any, str, dict[str, bytes]]:
    files = make_model_dir(tmp_path / "model")
    prefix = f"repo-{request.node.name.split('[')[-1].rstrip(']')}-{os.getpid()}/toy"
    prefix = "".join(c if c.isalnum() or c in "/-" else "-" for c in prefix)
    _upload("s3", s3_server, "models", prefix, tmp_path / "model")
    return s3_server, prefix, files


@pytest.mark.servers
def test_s3_list_and_fetch(s3_model: tuple[Any, str, dict[str, bytes]]) -> None:
    server, prefix, files = s3_model
    client = server.client()
    # A directory marker and a sibling directory that shares the name prefix.
    client.put_object(Bucket="models", Key=f"{prefix}/emptydir/", Body=b"")
    client.put_object(Bucket="models", Key=f"{prefix}2/other.txt", Body=b"not mine")
    objs = list_model(_s3_loc(server, "models", prefix), _s3_creds(server), expiry=120)
    assert [(o.rel_path, o.size, o.url) for o in objs if o.is_dir] == [("emptydir", 0, "")]
    objs = [o for o in objs if not o.is_dir]
    check_listing(objs, files)
    for obj in objs:
        query = parse_qs(urlsplit(obj.url).query)
        assert query["X-Amz-SignedHeaders"] == ["host"]
        assert query["X-Amz-Expires"] == ["120"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert urlsplit(obj.url).path.startswith(f"/models/{prefix}/")  # path-style
        key = f"{prefix}/{obj.rel_path}"
        head = client.head_object(Bucket="models", Key=key)
        assert obj.version == head["ETag"].strip('"')
        assert obj.md5 == hashlib.md5(files[obj.rel_path]).hexdigest()
        assert obj.source == f"s3://{server.endpoint}/models/{key}"
        assert server.secret_key not in repr(obj)


@pytest.mark.servers
def test_s3_missing(s3_server: Any) -> None:
    creds = _s3_creds(s3_server)
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list_model(_s3_loc(s3_server, "no-such-bucket-dfrepo", "x"), creds)
    s3_server.client().create_bucket(Bucket="models") if not _bucket_exists(s3_server, "models") else None
    with pytest.raises(ObjectNotFoundError, match="no objects under"):
        list_model(_s3_loc(s3_server, "models", "definitely/not/here"), creds)


def _bucket_exists(server: Any, bucket: str) -> bool:
    names = [b["Name"] for b in server.client().list_buckets().get("Buckets", [])]
    return bucket in names


@pytest.mark.servers
def test_s3_escaping_keys_refused(moto_s3: Any) -> None:
    client = moto_s3.client()
    if not _bucket_exists(moto_s3, "models"):
        client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="evil/m/ok.txt", Body=b"ok")
    client.put_object(Bucket="models", Key="evil/m/../../../etc/passwd", Body=b"x")
    with pytest.raises(UnsafePathError, match=r"'\.\.' segment"):
        list_model(_s3_loc(moto_s3, "models", "evil/m"), _s3_creds(moto_s3))
    client.put_object(Bucket="models", Key="evil2/m//abs", Body=b"x")
    with pytest.raises(UnsafePathError, match="absolute path|empty path segment"):
        list_model(_s3_loc(moto_s3, "models", "evil2/m"), _s3_creds(moto_s3))


@pytest.mark.servers
def test_s3_one_paginated_listing(s3_server: Any) -> None:
    """Only ListObjectsV2 pages (no delimiter, no HEADs); presigning is local."""
    client = s3_server.client()
    if not _bucket_exists(s3_server, "models"):
        client.create_bucket(Bucket="models")
    for i in range(25):
        client.put_object(Bucket="models", Key=f"paged/m/d{i % 3}/f{i:04d}", Body=b"")
    s3_server.clear_log()
    objs = list_model(_s3_loc(s3_server, "models", "paged/m"), _s3_creds(s3_server), page_size=10)
    assert len(objs) == 25  # zero-size files that are not "dir/" markers are kept
    # The recording relay may log the setup's last PUT after clear_log() (it records once
    # the answer went out): those are not the listing's.
    log = [(m, t) for m, t in s3_server.request_log() if not (m == "PUT" and "/paged/m/" in t)]
    assert len(log) == 3, log
    for method, target in log:
        query = parse_qs(urlsplit(target).query)
        assert method == "GET" and query["list-type"] == ["2"] and query["prefix"] == ["paged/m/"]
        assert "delimiter" not in query


@pytest.mark.servers
def test_seaweedfs_wrong_secret(seaweedfs: Any, tmp_path: Path) -> None:
    files = make_model_dir(tmp_path / "model")
    del files["1/model.onnx"]
    (tmp_path / "model" / "1" / "model.onnx").unlink()
    _upload("s3", seaweedfs, "models", "auth/toy", tmp_path / "model")
    loc = _s3_loc(seaweedfs, "models", "auth/toy")
    wrong = "WRONG-SECRET-" + "x" * 20
    with pytest.raises(CredentialsError) as exc:
        list_model(loc, _s3_creds(seaweedfs, secret_key=wrong))
    msg = str(exc.value)
    assert "rejected the credentials" in msg and wrong not in msg
    assert seaweedfs.secret_key not in msg
    with pytest.raises(CredentialsError, match="not known|rejected"):
        list_model(loc, _s3_creds(seaweedfs, key_id="NOSUCHKEYID"))
    # SeaweedFS checks presigned signatures too.
    objs = list_model(loc, _s3_creds(seaweedfs))
    check_listing(objs, files)
    obj = objs[0]
    sig = parse_qs(urlsplit(obj.url).query)["X-Amz-Signature"][0]
    tampered = obj.url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    status, _ = fetch(RemoteObject(obj.rel_path, obj.size, tampered))
    assert status == 403
    bare = obj.url.split("?")[0]
    assert fetch(RemoteObject(obj.rel_path, obj.size, bare))[0] == 403


@pytest.mark.servers
def test_s3_from_credential_file(seaweedfs: Any, tmp_path: Path) -> None:
    import json

    make_model_dir(tmp_path / "model")
    _upload("s3", seaweedfs, "models", "credfile/toy", tmp_path / "model")
    loc = _s3_loc(seaweedfs, "models", "credfile/toy")
    cred = tmp_path / "cloud_credential.json"
    cred.write_text(json.dumps({"s3": {
        "": {"key_id": seaweedfs.access_key, "secret_key": "wrong", "region": "us-east-1"},
        f"s3://{seaweedfs.host}:{seaweedfs.port}/models": {
            "key_id": seaweedfs.access_key, "secret_key": seaweedfs.secret_key,
            "region": seaweedfs.region},
    }}))
    objs = list_model(loc, credential_path=str(cred), env={})
    assert len(objs) == 5
    env = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
           "AWS_DEFAULT_REGION": seaweedfs.region}
    assert len(list_model(loc, env=env)) == 5


# --------------------------------------------------------------------------- Azure


def _az_creds(server: Any, **kw: Any) -> AzureCredentials:
    args = {"account_name": server.account, "account_key": server.key, "auth_type": "key"}
    args.update(kw)
    return AzureCredentials(**args)


@pytest.mark.servers
def test_azure_list_and_fetch(azurite: Any, tmp_path: Path) -> None:
    files = make_model_dir(tmp_path / "model")
    _upload("as", azurite, "models", "repo/toy", tmp_path / "model")
    service = azurite.service_client()
    service.get_container_client("models").upload_blob("repo/toy/emptydir/", b"", overwrite=True)
    service.get_container_client("models").upload_blob("repo/toy2/x", b"no", overwrite=True)
    loc = parse_location(f"as://{azurite.account}/models/repo/toy", azure_endpoint=azurite.endpoint)
    objs = list_model(loc, _az_creds(azurite), expiry=300)
    assert [(o.rel_path, o.size, o.url) for o in objs if o.is_dir] == [("emptydir", 0, "")]
    objs = [o for o in objs if not o.is_dir]
    check_listing(objs, files)
    for obj in objs:
        query = parse_qs(urlsplit(obj.url).query)
        assert query["sp"] == ["r"] and "sig" in query
        assert obj.url.startswith(f"{azurite.endpoint}/models/repo/toy/")
        props = service.get_blob_client("models", f"repo/toy/{obj.rel_path}").get_blob_properties()
        assert obj.version == props.etag.strip('"')
        assert azurite.key not in repr(obj)
    # Tampered SAS and no SAS are refused.
    obj = objs[0]
    # Tamper with the raw query text (the SDK's percent-encoding of "/" and "+" varies).
    head, _, query = obj.url.partition("?")
    pairs = [p.split("=", 1) for p in query.split("&")]
    pairs = [[k, ("A" if v[:1] != "A" else "B") + v[1:]] if k == "sig" else [k, v] for k, v in pairs]
    tampered = head + "?" + "&".join(f"{k}={v}" for k, v in pairs)
    assert tampered != obj.url
    assert fetch(RemoteObject(obj.rel_path, obj.size, tampered))[0] == 403
    assert fetch(RemoteObject(obj.rel_path, obj.size, obj.url.split("?")[0]))[0] in (403, 404)


@pytest.mark.servers
def test_azure_errors(azurite: Any, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    _upload("as", azurite, "models", "err/toy", tmp_path / "model")
    loc = parse_location(f"as://{azurite.account}/models/err/toy", azure_endpoint=azurite.endpoint)
    wrong = base64.b64encode(b"wrong-key-" * 6).decode()
    with pytest.raises(CredentialsError) as exc:
        list_model(loc, _az_creds(azurite, account_key=wrong))
    assert wrong not in str(exc.value) and azurite.key not in str(exc.value)
    missing = parse_location(f"as://{azurite.account}/nosuchcontainer/x", azure_endpoint=azurite.endpoint)
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list_model(missing, _az_creds(azurite))
    with pytest.raises(ObjectNotFoundError, match="no objects under"):
        list_model(parse_location(f"as://{azurite.account}/models/nothing/here",
                                  azure_endpoint=azurite.endpoint), _az_creds(azurite))
    # Anonymous listing of a private container fails: no unsigned URL is ever produced.
    with pytest.raises((CredentialsError, ObjectNotFoundError)):
        list_model(loc, AzureCredentials(auth_type="anonymous"))


@pytest.mark.servers
def test_azure_env_credentials(azurite: Any, tmp_path: Path) -> None:
    make_model_dir(tmp_path / "model")
    _upload("as", azurite, "models", "env/toy", tmp_path / "model")
    env = {"AZURE_STORAGE_ACCOUNT": azurite.account, "AZURE_STORAGE_KEY": azurite.key,
           "DFREPO_AZURE_ENDPOINT": azurite.endpoint}
    assert len(list_model(f"as://{azurite.account}/models/env/toy", env=env)) == 5


# --------------------------------------------------------------------------- GCS


@pytest.mark.servers
@pytest.mark.parametrize("mode", ["anonymous", "key"])
def test_gcs_list_and_fetch(fake_gcs: Any, tmp_path: Path, mode: str) -> None:
    import google_crc32c

    files = make_model_dir(tmp_path / "model")
    _upload("gs", fake_gcs, "models", f"repo-{mode}/toy", tmp_path / "model")
    loc = parse_location(f"gs://models/repo-{mode}/toy", gcs_endpoint=fake_gcs.endpoint)
    if mode == "key":
        from test_credentials import make_sa_key_file

        creds = GCSCredentials(service_account_path=make_sa_key_file(tmp_path))
    else:
        creds = GCSCredentials()
    objs = list_model(loc, creds, expiry=60)
    check_listing(objs, files)
    for obj in objs:
        data = files[obj.rel_path]
        assert obj.md5 == hashlib.md5(data).hexdigest()
        crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
        assert obj.crc32c == crc
        assert obj.version and obj.version.isdigit()
        assert obj.source == f"gs://models/repo-{mode}/toy/{obj.rel_path}"
        assert obj.headers == {}
        if mode == "key":
            query = parse_qs(urlsplit(obj.url).query)
            assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
            assert query["X-Goog-Expires"] == ["60"]
            assert query["generation"] == [obj.version]
        else:
            assert "/download/storage/v1/b/models/o/" in obj.url


@pytest.mark.servers
def test_gcs_emulator_env_and_missing(fake_gcs: Any, tmp_path: Path) -> None:
    env = {"CLOUD_STORAGE_EMULATOR_ENDPOINT": fake_gcs.endpoint}
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list_model("gs://no-such-bucket-dfrepo/x", env=env)
    make_model_dir(tmp_path / "model")
    _upload("gs", fake_gcs, "models", "envrepo/toy", tmp_path / "model")
    assert len(list_model("gs://models/envrepo/toy", env=env)) == 5
    with pytest.raises(ObjectNotFoundError, match="no objects under"):
        list_model("gs://models/envrepo/nothing", env=env)


class _TokenOnly:
    """Stands in for ADC user credentials: a bearer token, no signer, no SA e-mail."""

    valid = True
    token = "ya29.TOKEN-SECRET"


class _MetadataLike(_TokenOnly):
    """Stands in for Compute Engine credentials: an SA e-mail but no local key."""

    service_account_email = "sa@p.iam.gserviceaccount.com"


@pytest.mark.servers
def test_gcs_bearer_fallback(fake_gcs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = make_model_dir(tmp_path / "model")
    _upload("gs", fake_gcs, "models", "bearer/toy", tmp_path / "model")
    loc = parse_location("gs://models/bearer/toy", gcs_endpoint=fake_gcs.endpoint)
    monkeypatch.setattr(gcs, "google_credentials", lambda creds, **kw: _TokenOnly())
    objs = list_model(loc, GCSCredentials())
    check_listing(objs, files)  # the emulator ignores the header, but it is sent
    for obj in objs:
        assert obj.headers == {"Authorization": "Bearer ya29.TOKEN-SECRET"}
        assert "TOKEN-SECRET" not in repr(obj)
        assert obj.url.endswith(f"&generation={obj.version}")


@pytest.mark.servers
def test_gcs_iam_failure_falls_back(fake_gcs: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import google.cloud.storage._signing as signing

    make_model_dir(tmp_path / "model")
    _upload("gs", fake_gcs, "models", "iam/toy", tmp_path / "model")
    loc = parse_location("gs://models/iam/toy", gcs_endpoint=fake_gcs.endpoint)
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> str:
        calls.append("signBlob")
        raise signing.exceptions.TransportError("403 iam.serviceAccounts.signBlob denied")

    monkeypatch.setattr(signing, "_sign_message", refuse)
    monkeypatch.setattr(gcs, "google_credentials", lambda creds, **kw: _MetadataLike())
    objs = list_model(loc, GCSCredentials())
    assert calls == ["signBlob"]  # tried once, then bearer for every object
    assert all(o.headers == {"Authorization": "Bearer ya29.TOKEN-SECRET"} for o in objs)


@pytest.mark.servers
def test_s3_plain_form_with_sdk_endpoint_env(moto_s3: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``s3://bucket/...`` plus boto3's own AWS_ENDPOINT_URL (the SDK chain decides)."""
    files = make_model_dir(tmp_path / "model")
    _upload("s3", moto_s3, "models", "plainform/toy", tmp_path / "model")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    moto_s3.clear_log()
    objs = list_model("s3://models/plainform/toy",
                      S3Credentials(key_id=moto_s3.access_key, secret_key=moto_s3.secret_key))
    check_listing(objs, files)
    assert all(o.source.startswith("s3://models/plainform/toy/") for o in objs)
