"""cloud_credential.json parsing, matching and the environment fallback (no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dfrepo.credentials import (
    AzureCredentials,
    GCSCredentials,
    S3Credentials,
    load_credential_file,
    match_credential_name,
    resolve_credentials,
)
from dfrepo.errors import CredentialsError
from dfrepo.locations import parse_location
from dfrepo.stores.gcs import google_credentials
from dfrepo.stores.s3 import boto3_session

SECRET = "wJalrXUtnFEMI-K7MDENG-SECRETVALUE"
TOKEN = "FwoGZXIvYXdzEJr-SESSIONTOKEN"
AZKEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def write(tmp_path: Path, data: Any, name: str = "cloud_credential.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


FULL = {
    "s3": {
        "": {"key_id": "AKIA_CATCHALL", "secret_key": SECRET, "region": "us-east-1"},
        "s3://bucket": {"key_id": "AKIA_BUCKET", "secret_key": SECRET, "session_token": TOKEN,
                        "region": "eu-west-1"},
        "s3://bucket/models/special": {"profile": "special"},
        "s3://127.0.0.1:9000/models": {"key_id": "AKIA_LOCAL", "secret_key": SECRET},
    },
    "gs": {"gs://models": "/keys/sa.json", "": "relative-sa.json"},
    "as": {
        "as://acct": {"account_str": "acct", "account_key": AZKEY},
        "as://acct/models/mi": {"account_str": "acct", "auth_type": "managed_identity",
                         "client_id": "cid-1"},
        "as://other": {"account_str": "other", "auth_type": "default"},
    },
}


def test_load_full(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    cf = load_credential_file(path)
    assert cf.path == path
    assert set(cf.s3) == set(FULL["s3"])
    assert cf.s3["s3://bucket"].session_token == TOKEN
    assert cf.s3["s3://bucket"].source == f"{path}#s3/s3://bucket"
    assert cf.gs["gs://models"].service_account_path == "/keys/sa.json"
    # Relative key paths are taken relative to the credential file.
    assert cf.gs[""].service_account_path == str(tmp_path / "relative-sa.json")
    assert cf.as_["as://acct"].auth_type == "key"
    assert cf.as_["as://acct/models/mi"].auth_type == "managed_identity"
    assert cf.as_["as://acct/models/mi"].client_id == "cid-1"


@pytest.mark.parametrize("location,key_id", [
    ("s3://bucket/models/repo", "AKIA_BUCKET"),
    ("s3://bucket", "AKIA_BUCKET"),
    ("s3://bucket-2/models", "AKIA_BUCKET"),     # plain string prefix, as Triton
    ("s3://bucketx", "AKIA_BUCKET"),
    ("s3://other/x", "AKIA_CATCHALL"),
    ("s3://127.0.0.1:9000/models/repo", "AKIA_LOCAL"),
    ("s3://127.0.0.1:9000/models2/repo", "AKIA_LOCAL"),
    ("s3://127.0.0.1:9001/models/repo", "AKIA_CATCHALL"),
])
def test_s3_matching(tmp_path: Path, location: str, key_id: str) -> None:
    creds = resolve_credentials(location, credential_path=write(tmp_path, FULL), env={})
    assert isinstance(creds, S3Credentials)
    assert creds.key_id == key_id


def test_longest_match_wins(tmp_path: Path) -> None:
    creds = resolve_credentials("s3://bucket/models/special/m", credential_path=write(tmp_path, FULL),
                                env={})
    assert isinstance(creds, S3Credentials)
    assert creds.profile == "special" and not creds.is_static
    creds = resolve_credentials("s3://bucket/models/specialist", credential_path=write(tmp_path, FULL),
                                env={})
    assert creds.profile == "special"  # type: ignore[union-attr]  # plain string prefix, as Triton
    creds = resolve_credentials("s3://bucket/models/other", credential_path=write(tmp_path, FULL),
                                env={})
    assert creds.key_id == "AKIA_BUCKET"  # type: ignore[union-attr]


def test_azure_and_gcs_matching(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert resolve_credentials("as://acct/models/r", credential_path=path, env={}).auth_type == "key"  # type: ignore[union-attr]
    mi = resolve_credentials("as://acct/models/mi/r", credential_path=path, env={})
    assert isinstance(mi, AzureCredentials) and mi.auth_type == "managed_identity"
    gs = resolve_credentials("gs://models/repo", credential_path=path, env={})
    assert isinstance(gs, GCSCredentials) and gs.service_account_path == "/keys/sa.json"
    gs2 = resolve_credentials("gs://models2/repo", credential_path=path, env={})
    assert gs2.service_account_path == "/keys/sa.json"  # type: ignore[union-attr]  # string prefix
    gs3 = resolve_credentials("gs://weights/repo", credential_path=path, env={})
    assert gs3.service_account_path.endswith("relative-sa.json")  # type: ignore[union-attr]
    with pytest.raises(CredentialsError) as exc:
        resolve_credentials("as://nomatch/c1c/r", credential_path=path, env={})
    assert path in str(exc.value) and "as://nomatch" in str(exc.value)
    assert exc.value.provider == "as"


def test_no_entry_for_provider_is_no_match(tmp_path: Path) -> None:
    path = write(tmp_path, {"gs": {"": "/k.json"}})
    with pytest.raises(CredentialsError, match="no 's3' credential"):
        resolve_credentials("s3://b/x", credential_path=path, env={"AWS_ACCESS_KEY_ID": "x"})


def test_file_from_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    creds = resolve_credentials("s3://bucket/x", env={"TRITON_CLOUD_CREDENTIAL_PATH": path})
    assert creds.key_id == "AKIA_BUCKET"  # type: ignore[union-attr]
    assert resolve_credentials("/local/dir", env={"TRITON_CLOUD_CREDENTIAL_PATH": path}) is None


def test_match_credential_name() -> None:
    """Triton's rule: the longest plain string prefix (not path-segment aware)."""
    names = ["", "s3://bucket", "s3://bucket/a", "s3://"]
    assert match_credential_name(names, "s3://bucket/a/b") == "s3://bucket/a"
    assert match_credential_name(names, "s3://bucket/ab") == "s3://bucket/a"
    assert match_credential_name(names, "s3://bucket-2") == "s3://bucket"
    assert match_credential_name(["s3://bucket"], "s3://bucket-2") == "s3://bucket"
    assert match_credential_name(["s3://bucket/"], "s3://bucket-2") is None
    assert match_credential_name(["gs://b/"], "gs://b/x") == "gs://b/"
    assert match_credential_name(["s3://other"], "s3://bucket/x") is None


def test_credential_key_is_a_plain_string_prefix(tmp_path: Path) -> None:
    """A key that ends mid-segment matches as in Triton and the C++ agent (issue #15)."""
    path = write(tmp_path, {
        "s3": {"s3://bucket/mod": {"key_id": "AKIA_MOD", "secret_key": SECRET}},
        "gs": {"gs://models-": "/keys/sa.json"},
        "as": {"as://acct/mod": {"account_str": "acct", "account_key": AZKEY}},
    })
    creds = resolve_credentials("s3://bucket/models/x", credential_path=path, env={})
    assert isinstance(creds, S3Credentials) and creds.key_id == "AKIA_MOD"
    gcreds = resolve_credentials("gs://models-eu/x", credential_path=path, env={})
    assert isinstance(gcreds, GCSCredentials) and gcreds.service_account_path == "/keys/sa.json"
    acreds = resolve_credentials("as://acct/models/x", credential_path=path, env={})
    assert isinstance(acreds, AzureCredentials) and acreds.account_name == "acct"
    with pytest.raises(CredentialsError, match="matches"):
        resolve_credentials("s3://bucket/other/x", credential_path=path, env={})


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("content,where", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({"s3": []}, "s3"),
    ({"s3": {"n": "string"}}, "s3/n"),
    ({"s3": {"n": {"key_id": "AKIA", "secret_key": 12345}}}, "s3/n/secret_key"),
    ({"s3": {"n": {"key_id": "AKIA"}}}, "s3/n"),
    ({"s3": {"n": {"secret_key": SECRET}}}, "s3/n"),
    ({"s3": {"n": {"key_id": "AKIA", "secret_key": SECRET, "session_token": ["x"]}}},
     "s3/n/session_token"),
    ({"gs": {"n": {"path": "x"}}}, "gs/n"),
    ({"as": {"n": {"account_str": "a", "account_key": 7}}}, "as/n/account_key"),
    ({"as": {"n": {"account_str": "a", "auth_type": "password", "account_key": SECRET}}},
     "as/n/auth_type"),
    ({"as": {"n": {"account_str": "a", "auth_type": "key"}}}, "as/n/auth_type"),
    ({"as": "x"}, "as"),
])
def test_malformed_file(tmp_path: Path, content: Any, where: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(CredentialsError) as exc:
        load_credential_file(path)
    msg = str(exc.value)
    assert path in msg and where in msg
    assert SECRET not in msg and "12345" not in msg
    assert exc.value.source == path


def test_json_error_does_not_echo_content(tmp_path: Path) -> None:
    path = write(tmp_path, '{"s3": {"n": {"secret_key": "' + SECRET + '" "x"}}}')
    with pytest.raises(CredentialsError) as exc:
        load_credential_file(path)
    assert SECRET not in str(exc.value) and "line 1" in str(exc.value)
    assert exc.value.__cause__ is None


def test_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CredentialsError, match="cannot read credential file"):
        load_credential_file(missing)
    with pytest.raises(CredentialsError, match="nope.json"):
        resolve_credentials("s3://b/x", env={"TRITON_CLOUD_CREDENTIAL_PATH": missing})
    if os.geteuid() != 0:
        path = write(tmp_path, FULL)
        os.chmod(path, 0)
        with pytest.raises(CredentialsError, match="Permission denied"):
            load_credential_file(path)


def test_unknown_keys_ignored(tmp_path: Path) -> None:
    cf = load_credential_file(write(tmp_path, {"oss": {}, "s3": {"": {"key_id": "a", "secret_key": "b",
                                                                       "extra": 1}}}))
    assert cf.s3[""].key_id == "a"


# --------------------------------------------------------------------------- env fallback


def test_env_s3() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_SESSION_TOKEN": TOKEN, "AWS_DEFAULT_REGION": "ap-south-1", "AWS_PROFILE": "p"}
    creds = resolve_credentials("s3://b/x", env=env)
    assert isinstance(creds, S3Credentials)
    assert (creds.key_id, creds.secret_key, creds.session_token, creds.region, creds.profile,
            creds.source) == ("AKIAENV", SECRET, TOKEN, "ap-south-1", "p", "env")
    assert creds.is_static
    assert resolve_credentials("s3://b/x", env={"AWS_REGION": "r"}).region == "r"  # type: ignore[union-attr]


def test_env_s3_default_chain() -> None:
    creds = resolve_credentials("s3://b/x", env={})
    assert creds == S3Credentials(source="default-chain")
    half = resolve_credentials("s3://b/x", env={"AWS_ACCESS_KEY_ID": "AKIA"})
    assert not half.is_static and half.key_id is None  # type: ignore[union-attr]


def test_env_gcs() -> None:
    creds = resolve_credentials("gs://b/x", env={"GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})
    assert creds == GCSCredentials(service_account_path="/k.json", source="env")
    assert resolve_credentials("gs://b/x", env={}) == GCSCredentials()


def test_env_azure() -> None:
    env = {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": AZKEY}
    creds = resolve_credentials("as://acct/c1c/x", env=env)
    assert isinstance(creds, AzureCredentials)
    assert (creds.account_name, creds.account_key, creds.auth_type, creds.source) == (
        "acct", AZKEY, "key", "env")
    mi = resolve_credentials("as://acct/c1c/x", env={"AZURE_STORAGE_AUTH_TYPE": "managed_identity",
                                                     "AZURE_STORAGE_CLIENT_ID": "cid"})
    assert mi.auth_type == "managed_identity" and mi.client_id == "cid"  # type: ignore[union-attr]
    assert resolve_credentials("as://acct/c1c/x", env={}).auth_type == "default"  # type: ignore[union-attr]
    with pytest.raises(CredentialsError, match="AZURE_STORAGE_AUTH_TYPE"):
        resolve_credentials("as://acct/c1c/x", env={"AZURE_STORAGE_AUTH_TYPE": "bogus"})


# --------------------------------------------------------------------------- secrets


def test_reprs_hide_secrets() -> None:
    s3 = S3Credentials(key_id="AKIA", secret_key=SECRET, session_token=TOKEN)
    az = AzureCredentials(account_name="a", account_key=AZKEY, auth_type="key")
    for obj in (s3, az):
        text = repr(obj) + str(obj)
        assert SECRET not in text and TOKEN not in text and AZKEY not in text
    assert "AKIA" in repr(s3) and "'***'" in repr(s3)
    assert "secret_key=None" in repr(S3Credentials())


def test_boto3_session_from_static_creds() -> None:
    s3 = S3Credentials(key_id="AKIA", secret_key=SECRET, region="eu-west-1")
    session = boto3_session(s3)
    frozen = session.get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == ("AKIA", SECRET)
    assert session.region_name == "eu-west-1"
    with pytest.raises(CredentialsError, match="profile 'nope-profile'"):
        boto3_session(S3Credentials(profile="nope-profile"))


def test_gcs_load(tmp_path: Path) -> None:
    from google.auth.credentials import AnonymousCredentials

    assert isinstance(google_credentials(GCSCredentials(), anonymous_if_missing=True), AnonymousCredentials)
    with pytest.raises(CredentialsError, match="cannot read GCS credential file"):
        google_credentials(GCSCredentials(service_account_path=str(tmp_path / "missing.json")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account", "private_key": "' + SECRET + '"}')
    with pytest.raises(CredentialsError) as exc:
        google_credentials(GCSCredentials(service_account_path=str(bad)))
    assert SECRET not in str(exc.value)
    notjson = tmp_path / "nj.json"
    notjson.write_text(SECRET)
    with pytest.raises(CredentialsError, match="not valid JSON") as exc:
        google_credentials(GCSCredentials(service_account_path=str(notjson)))
    assert SECRET not in str(exc.value)


def test_gcs_load_service_account(tmp_path: Path, sa_key_file: str) -> None:
    from google.oauth2 import service_account

    creds = google_credentials(GCSCredentials(service_account_path=sa_key_file))
    assert isinstance(creds, service_account.Credentials)


@pytest.fixture
def sa_key_file(tmp_path: Path) -> str:
    return make_sa_key_file(tmp_path)


def make_sa_key_file(directory: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account", "project_id": "dfrepo-test", "private_key_id": "kid1",
        "private_key": pem, "client_email": "dfrepo@dfrepo-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "http://127.0.0.1:9/token",
    }
    path = directory / "sa.json"
    path.write_text(json.dumps(info))
    return str(path)


def test_location_object_accepted(tmp_path: Path) -> None:
    loc = parse_location("s3://bucket/x", env={})
    assert resolve_credentials(loc, credential_path=write(tmp_path, FULL)).key_id == "AKIA_BUCKET"  # type: ignore[union-attr]
