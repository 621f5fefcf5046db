"""Secrets never leak: exceptions, reprs, tracebacks and DEBUG logs of failing pulls with
presigned URLs (S3 via SeaweedFS, Azure SAS via Azurite), session tokens and bearer
headers carry no secret; TLS is verified by default; and the session-wide secrets
guard (tests/secrets_guard.py) really fails a run that leaks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine import download
from dfrepo.engine.settings import TransferConfig
from dfrepo.objects import RemoteObject
from dfrepo.pull import pull
from secrets_guard import PATTERNS, extra_secrets, scan

CFG = TransferConfig(range_size=64 * 1024, fsync=False, backoff_base=0.01, backoff_max=0.05,
                     read_timeout=2.0, max_attempts=2)


def everything_about(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """Every string a user or a log collector could see about a failure."""
    parts = [str(exc), repr(exc), repr(exc.__dict__), "".join(traceback.format_exception(exc)), caplog.text]
    parts += [repr(r.args) + r.getMessage() for r in caplog.records]
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        parts += [str(cause), repr(cause), repr(getattr(cause, "__dict__", {}))]
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)


def secret_query_values(url: str) -> list[str]:
    keys = {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "X-Goog-Signature"}
    return [v for k, v in parse_qsl(urlsplit(url).query) if k in keys and len(v) >= 8]


def assert_clean(text: str, secrets: list[str]) -> None:
    for s in secrets:
        assert s not in text, f"secret {s[:4]}... leaked"
    for pat in PATTERNS:
        assert not pat.search(text), f"signature-shaped value leaked ({pat.pattern})"


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dfrepo")


def _model(root: Path) -> dict[str, bytes]:
    files = {"config.pbtxt": b'name: "m"\n', "1/model.bin": os.urandom(200_000)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _fail_three_ways(objs: list[RemoteObject], tmp_path: Path, peer, caplog, secrets: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Wrong MD5 (direct), a 403 from the backend through the peer, and read timeouts
    through the peer (RetriesExhausted with a urllib3 cause): none may show a secret."""
    bad_md5 = [RemoteObject(rel_path=o.rel_path, size=o.size, url=o.url, version=o.version, md5="0" * 32,
                            headers=o.headers, source=o.source) for o in objs]
    loc = "s3://127.0.0.1:9/bucket/m"
    cases = [
        (dict(objects=bad_md5, dragonfly=DragonflyConfig()), {}, errors.ChecksumMismatchError),
        (dict(objects=objs, dragonfly=DragonflyConfig(proxy=peer.url)),
         dict(fail_next=50, fail_status=403, fail_error_type="backend"), errors.HTTPStatusError),
        (dict(objects=objs, dragonfly=DragonflyConfig(proxy=peer.url), transfer=CFG.with_overrides(
            {"read_timeout": "0.2"})), dict(first_byte_delay=0.6), errors.RetriesExhaustedError),
    ]
    for i, (kwargs, faults, expected) in enumerate(cases):
        caplog.clear()
        peer.clear_faults()
        peer.clear_tasks()
        if faults:
            peer.set_faults(**faults)
        kwargs.setdefault("transfer", CFG)
        with pytest.raises(expected) as ei:
            pull(loc, tmp_path / f"dest{i}", **kwargs)
        text = everything_about(ei.value, caplog)
        assert_clean(text, secrets)
        assert not (tmp_path / f"dest{i}").exists()
    peer.clear_faults()


@pytest.mark.servers
def test_s3_presigned_failures_leak_nothing(seaweedfs, peer, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from dfrepo.stores import list_model
    from servers.upload import upload_tree_s3

    _model(tmp_path / "src")
    upload_tree_s3(seaweedfs, "secrets-s3", "repo/m", tmp_path / "src")
    objs = list_model(seaweedfs.s3_url("secrets-s3", "repo/m"), env=seaweedfs.triton_env(), expiry=300)
    sigs = [v for o in objs for v in secret_query_values(o.url)]
    assert any("X-Amz-Signature=" in o.url for o in objs) and sigs
    extra_secrets(*sigs)
    secrets = sigs + [seaweedfs.secret_key]
    assert_clean("\n".join(repr(o) for o in objs), secrets)
    _fail_three_ways(objs, tmp_path, peer, caplog, secrets)


@pytest.mark.servers
def test_debug_log_carries_no_signature(seaweedfs, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """With the root logger at DEBUG, dfrepo logs every plain-HTTP request line with its
    query redacted (urllib3's request lines, for TLS origins: see the next test)."""
    client = seaweedfs.client(direct=True)
    client.create_bucket(Bucket="secrets-log")
    client.put_object(Bucket="secrets-log", Key="w.bin", Body=b"x" * 100_000)
    url = client.generate_presigned_url("get_object", Params={"Bucket": "secrets-log", "Key": "w.bin"},
                                        ExpiresIn=300)
    sigs = secret_query_values(url)
    assert sigs
    extra_secrets(*sigs)
    caplog.set_level(logging.DEBUG)
    download(url, tmp_path / "w.bin", config=CFG)
    assert (tmp_path / "w.bin").read_bytes() == b"x" * 100_000
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("dfrepo")]
    assert any('"GET http://' in ln and '/secrets-log/w.bin?<redacted>"' in ln for ln in lines), lines
    assert_clean("\n".join(lines) + caplog.text, sigs + [seaweedfs.secret_key])


@pytest.mark.servers
def test_azure_sas_failures_leak_nothing(azurite, peer, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from dfrepo.credentials import AzureCredentials
    from dfrepo.locations import parse_location
    from dfrepo.stores import list_model
    from servers.upload import upload_tree_azure

    _model(tmp_path / "src")
    upload_tree_azure(azurite, "secrets", "repo/m", tmp_path / "src")
    loc = parse_location(f"as://{azurite.account}/secrets/repo/m", azure_endpoint=azurite.endpoint)
    creds = AzureCredentials(account_name=azurite.account, account_key=azurite.key, auth_type="key")
    objs = list_model(loc, creds, expiry=300)
    sigs = [v for o in objs for v in secret_query_values(o.url)]
    assert sigs, "Azurite listing should give SAS URLs"
    extra_secrets(*sigs)
    secrets = sigs + [azurite.key]
    assert_clean("\n".join(repr(o) for o in objs), secrets)
    _fail_three_ways(objs, tmp_path, peer, caplog, secrets)


def test_session_token_and_bearer_never_shown(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from faultservers import Knobs, RangeServer

    token = "FwoGZXIvYXdzEJr" + "T0k3n" * 8
    bearer = "ya29.a0AfB_" + "b3ar3r" * 8
    sig = "a1b2c3d4" * 8
    extra_secrets(token, bearer, sig)
    with RangeServer(Knobs(fail_first=100, fail_status=403)) as srv:
        srv.put("/m/model.bin", b"x" * 1000)
        url = srv.url("/m/model.bin", f"X-Amz-Security-Token={token}&X-Amz-Signature={sig}&X-Amz-Date=1")
        obj = RemoteObject(rel_path="model.bin", size=1000, url=url, headers={"Authorization": f"Bearer {bearer}"},
                           source="s3://bucket/m/model.bin")
        assert_clean(repr(obj), [token, bearer, sig])
        with pytest.raises(errors.HTTPStatusError) as ei:
            pull("s3://127.0.0.1:9/bucket/m", tmp_path / "dest", objects=[obj], dragonfly=DragonflyConfig(),
                 transfer=CFG)
        assert ei.value.status == 403
        # The server did get the credentials (they are needed), nothing else did.
        assert any(s.headers.get("Authorization") == f"Bearer {bearer}" for s in srv.seen)
    assert_clean(everything_about(ei.value, caplog), [token, bearer, sig, "secretsig123"])


# =============================================================== TLS


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_verify_tls_is_on_by_default() -> None:
    assert TransferConfig().verify_tls is True
    assert TransferConfig().ca_bundle is None


def test_self_signed_origin_fails_unless_ca_bundle(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from dfpeer.testing import RangeOrigin

    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    data = os.urandom(150_000)
    with RangeOrigin(ssl_context=ctx) as origin:
        origin.put("/b/model.bin", data)
        url = origin.url_for("/b/model.bin", "X-Amz-Signature=" + "9f" * 32)
        with pytest.raises(errors.TransferError, match="TLS") as ei:
            download(url, tmp_path / "out", config=CFG, implementation="python")
        assert not (tmp_path / "out").exists()
        assert_clean(everything_about(ei.value, caplog), ["9f" * 32])
        caplog.set_level(logging.DEBUG)
        res = download(url, tmp_path / "out", config=TransferConfig(
            range_size=64 * 1024, fsync=False, ca_bundle=str(cert)))
        assert (tmp_path / "out").read_bytes() == data and res.size == len(data)
        # urllib3 (TLS origins) logs every request line, query included: scrubbed.
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
        assert any('"GET /b/model.bin?<redacted>' in ln for ln in lines), lines
        assert_clean("\n".join(lines) + caplog.text, ["9f" * 32])
        import warnings

        with warnings.catch_warnings():  # urllib3's InsecureRequestWarning: explicit opt-out here
            warnings.simplefilter("ignore")
            insecure = download(url, tmp_path / "out2", config=TransferConfig(fsync=False, verify_tls=False))
        assert insecure.size == len(data)


# =============================================================== the guard itself


def test_guard_fails_a_leaking_run(tmp_path: Path) -> None:
    """Run an inner pytest session with only the guard: a passing test that merely logs
    a signature at DEBUG must still fail the run; a clean run passes."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import logging
        def test_clean():
            logging.getLogger("dfrepo").debug("GET https://h/k?<redacted>")
        def test_leaks_in_debug_log():
            logging.getLogger("dfrepo").debug("GET https://h/k?X-Amz-Signature=%s", "0123456789abcdef" * 4)
        def test_leaks_known_secret():
            print("azure key:", __import__("servers.azure", fromlist=["x"]).AZURITE_KEY)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "secrets_guard", "-p", "no:cacheprovider",
            "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path)]
    leaky = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert leaky.returncode == 1, leaky.stdout[-3000:]
    assert "3 passed" in leaky.stdout
    assert "SECRET LEAK" in leaky.stdout and "test_leaks_in_debug_log" in leaky.stdout
    assert "test_leaks_known_secret" in leaky.stdout
    assert "test_clean" not in leaky.stdout.split("secrets guard")[-1]
    # The guard masks what it found.
    assert "0123456789abcdef" * 2 not in leaky.stdout
    (tmp_path / "test_inner.py").write_text("def test_ok():\n    print('nothing to see')\n")
    clean = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert clean.returncode == 0, clean.stdout[-3000:]


def test_scan_patterns() -> None:
    assert scan("https://h/k?X-Amz-Signature=<redacted>", []) == []
    assert scan("https://h/k?<redacted>", []) == []
    assert scan("https://h/k?sv=2024&sig=abc", []) == []  # too short to be real
    assert scan("https://h/k?sv=2024&sig=" + "Zm9vYmFy" * 4 + "%3D", [])
    assert scan("X-Goog-Signature=" + "ab" * 20, [])
    assert scan("Authorization: Bearer " + "x" * 30, [])
    assert scan("password hunter2", ["hunter2"])
    assert hashlib.md5(b"").hexdigest() not in " ".join(scan("md5 d41d8cd98f00b204e9800998ecf8427e", []))
