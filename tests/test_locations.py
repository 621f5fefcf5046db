"""Location parsing (Triton's grammars) and the safe-path helpers."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfrepo.errors import ConfigError, LocationError, UnsafePathError
from dfrepo.locations import (
    AzureLocation,
    GCSLocation,
    LocalLocation,
    S3Location,
    parse_location,
)
from dfrepo.safepaths import safe_join, safe_relpath

NOENV: dict[str, str] = {}

# --------------------------------------------------------------------------- S3

S3_CASES = [
    # (location, bucket, prefix, endpoint_url, use_https)
    ("s3://bucket", "bucket", "", None, True),
    ("s3://bucket/", "bucket", "", None, True),
    ("s3://bucket/models/repo", "bucket", "models/repo", None, True),
    ("s3://bucket//models///repo//", "bucket", "models/repo", None, True),
    ("s3:///bucket/models", "bucket", "models", None, True),
    ("s3://Bucket_Upper/x y/z", "Bucket_Upper", "x y/z", None, True),
    ("s3://127.0.0.1:9000/models/repo", "models", "repo", "http://127.0.0.1:9000", False),
    ("s3://localhost:9000/models", "models", "", "http://localhost:9000", False),
    ("s3://http://127.0.0.1:9000/models/a/b", "models", "a/b", "http://127.0.0.1:9000", False),
    ("s3://https://s3.example.com:443/my.bucket/r_1/m-2",
     "my.bucket", "r_1/m-2", "https://s3.example.com:443", True),
    ("s3://host:19002//models//repo/", "models", "repo", "http://host:19002", False),
    # No port: the regex needs one, so the fallback reads the host as the bucket.
    ("s3://s3.example.com/models/repo", "s3.example.com", "models/repo", None, True),
]


@pytest.mark.parametrize("loc,bucket,prefix,endpoint,https", S3_CASES)
def test_s3_forms(loc: str, bucket: str, prefix: str, endpoint: str | None, https: bool) -> None:
    parsed = parse_location(loc, env=NOENV)
    assert isinstance(parsed, S3Location)
    assert parsed.scheme == "s3"
    assert (parsed.bucket, parsed.prefix, parsed.endpoint_url, parsed.use_https) == (
        bucket, prefix, endpoint, https)
    assert parsed.quirk is None
    assert parsed.path_style is (endpoint is not None)
    assert parsed.raw == loc


def test_s3_triton_quirk_host_port_becomes_bucket() -> None:
    # A space in a key segment misses Triton's regex: host:port becomes the "bucket".
    parsed = parse_location("s3://127.0.0.1:9000/models/a b", env=NOENV)
    assert isinstance(parsed, S3Location)
    assert parsed.bucket == "127.0.0.1:9000"
    assert parsed.prefix == "models/a b"
    assert parsed.endpoint_url is None
    assert parsed.quirk and "127.0.0.1:9000" in parsed.quirk
    # An upper-case bucket does the same.
    assert parse_location("s3://h:1/Models/x", env=NOENV).bucket == "h:1"  # type: ignore[union-attr]


def test_s3_quirk_with_protocol_is_refused() -> None:
    # Triton would take "http:" as the bucket here.
    with pytest.raises(LocationError) as exc:
        parse_location("s3://http://127.0.0.1:9000/models/a+b", env=NOENV)
    assert "http:" in str(exc.value)


def test_s3_display_and_urls() -> None:
    loc = parse_location("s3://127.0.0.1:9000/models/repo", env=NOENV)
    assert loc.display == "s3://http://127.0.0.1:9000/models/repo"
    assert loc.source_for("repo/m/1/a b") == "s3://http://127.0.0.1:9000/models/repo/m/1/a b"
    assert loc.url_for("repo/a b") == "http://127.0.0.1:9000/models/repo/a%20b"  # type: ignore[union-attr]
    aws = parse_location("s3://bkt/p", env=NOENV)
    assert aws.display == "s3://bkt/p" and str(aws) == "s3://bkt/p"
    assert aws.url_for("p/x") == "https://bkt.s3.amazonaws.com/p/x"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- GCS


@pytest.mark.parametrize("loc,bucket,prefix", [
    ("gs://bucket", "bucket", ""),
    ("gs://bucket/", "bucket", ""),
    ("gs://bucket/models/repo", "bucket", "models/repo"),
    ("gs://bucket//models//repo/", "bucket", "models/repo"),
    ("gs://b.with.dots/a-b/c_d", "b.with.dots", "a-b/c_d"),
])
def test_gcs_forms(loc: str, bucket: str, prefix: str) -> None:
    parsed = parse_location(loc, env=NOENV)
    assert isinstance(parsed, GCSLocation)
    assert (parsed.scheme, parsed.bucket, parsed.prefix) == ("gs", bucket, prefix)
    assert parsed.endpoint == "https://storage.googleapis.com"
    assert not parsed.is_emulator


def test_gcs_emulator_endpoint_from_env() -> None:
    env = {"CLOUD_STORAGE_EMULATOR_ENDPOINT": "http://127.0.0.1:19021/"}
    parsed = parse_location("gs://models/repo", env=env)
    assert isinstance(parsed, GCSLocation)
    assert parsed.endpoint == "http://127.0.0.1:19021"
    assert parsed.is_emulator
    assert parsed.url_for("repo/a b", 7) == (
        "http://127.0.0.1:19021/download/storage/v1/b/models/o/repo%2Fa%20b?alt=media&generation=7")
    assert parse_location("gs://m/r", env=env, gcs_endpoint="http://h:1").endpoint == "http://h:1"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- Azure


@pytest.mark.parametrize("loc,account,container,prefix,endpoint", [
    ("as://acct/models", "acct", "models", "", "https://acct.blob.core.windows.net"),
    ("as://acct/models/", "acct", "models", "", "https://acct.blob.core.windows.net"),
    ("as://acct/models/repo/m", "acct", "models", "repo/m", "https://acct.blob.core.windows.net"),
    ("as://acct.blob.core.windows.net/models/repo", "acct", "models", "repo",
     "https://acct.blob.core.windows.net"),
    ("as://ACCT.blob.core.windows.net/models/repo", "acct", "models", "repo",
     "https://acct.blob.core.windows.net"),
    ("as://acct.blob.core.chinacloudapi.cn/models/r", "acct", "models", "r",
     "https://acct.blob.core.chinacloudapi.cn"),
    ("as://acct/models//a//b/", "acct", "models", "a/b", "https://acct.blob.core.windows.net"),
    ("as://devstoreaccount1/$root/x", "devstoreaccount1", "$root", "x",
     "https://devstoreaccount1.blob.core.windows.net"),
])
def test_azure_forms(loc: str, account: str, container: str, prefix: str, endpoint: str) -> None:
    parsed = parse_location(loc, env=NOENV)
    assert isinstance(parsed, AzureLocation)
    assert (parsed.scheme, parsed.account, parsed.container, parsed.prefix, parsed.endpoint) == (
        "as", account, container, prefix, endpoint)


def test_azure_endpoint_override() -> None:
    parsed = parse_location("as://devstoreaccount1/models/repo",
                            azure_endpoint="http://127.0.0.1:10000/{account}/", env=NOENV)
    assert parsed.endpoint == "http://127.0.0.1:10000/devstoreaccount1"  # type: ignore[union-attr]
    assert parsed.url_for("repo/a b") == (  # type: ignore[union-attr]
        "http://127.0.0.1:10000/devstoreaccount1/models/repo/a%20b")
    env = {"DFREPO_AZURE_ENDPOINT": "http://127.0.0.1:1/acct"}
    assert parse_location("as://acct/c1c/r", env=env).endpoint == "http://127.0.0.1:1/acct"  # type: ignore[union-attr]
    assert parse_location("as://acct/c1c/r", env=NOENV).display == "as://acct/c1c/r"


# --------------------------------------------------------------------------- local


@pytest.mark.parametrize("loc,path", [
    ("/models/repo", "/models/repo"),
    ("relative/dir", "relative/dir"),
    ("file:///models/repo", "/models/repo"),
    ("file://localhost/models/a%20b", "/models/a b"),
    ("C:foo", "C:foo"),
])
def test_local_forms(loc: str, path: str) -> None:
    parsed = parse_location(loc, env=NOENV)
    assert isinstance(parsed, LocalLocation)
    assert parsed.scheme == "file" and parsed.path == path
    assert parsed.display == path


# --------------------------------------------------------------------------- malformed

MALFORMED = [
    ("s3://", "bucket"),
    ("s3:////", "bucket"),
    ("s3://bucket/a/../b", "prefix"),
    ("s3://bucket/./b", "prefix"),
    ("s3://127.0.0.1:9000/models/../x", "prefix"),
    ("s3://127.0.0.1:99999/models/x", "port"),
    ("s3://https://hostwithoutport/bucket", "endpoint"),
    ("s3://bucket/a/http://x", "path"),
    ("s3://bucket/a\x00b", "path"),
    ("s3://bucket/a\nb", "path"),
    ("gs://", "bucket"),
    ("gs:///x", "bucket"),
    ("gs://b/../x", "prefix"),
    ("gs://../x", "bucket"),
    ("as://acct", "container"),
    ("as://acct/", "container"),
    ("as:///models", "container"),
    ("as://acct/models?sv=2020&sig=SECRET", "query"),
    ("as://Bad_Account!/models", "account"),
    ("as://ab/models", "account"),
    ("as://acct/UPPER", "container"),
    ("as://acct/models/a/../b", "prefix"),
    ("S3://bucket/x", "scheme"),
    ("https://example.com/x", "scheme"),
    ("hdfs://nn/x", "scheme"),
    ("file://otherhost/x", "host"),
    ("file://", "path"),
    ("", "path"),
    ("/a\x00b", "path"),
]


@pytest.mark.parametrize("loc,key", MALFORMED)
def test_malformed(loc: str, key: str) -> None:
    with pytest.raises(LocationError) as exc:
        parse_location(loc, env=NOENV)
    assert exc.value.key == key
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, ValueError)
    assert "SECRET" not in str(exc.value)


@pytest.mark.parametrize("endpoint", ["ftp://h", "http://", "http://u:p@h:1", "http://h/?q=1", "h:1"])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(LocationError) as exc:
        parse_location("as://acct/models", azure_endpoint=endpoint, env=NOENV)
    assert exc.value.key == "azure_endpoint"
    assert "p@" not in str(exc.value)
    with pytest.raises(LocationError):
        parse_location("gs://b/x", gcs_endpoint=endpoint, env=NOENV)


def test_not_a_string() -> None:
    with pytest.raises(LocationError):
        parse_location(b"s3://x", env=NOENV)  # type: ignore[arg-type]


_schemes = st.sampled_from(["s3://", "gs://", "as://", "file://", "", "s3://http://", "s3://https://"])
_alphabet = st.sampled_from(list("abAB09.-_/:+ @?=%\\\x00\n") + ["..", "//", "127.0.0.1:9000/"])


@settings(max_examples=400, deadline=None)
@given(_schemes, st.lists(_alphabet, max_size=20).map("".join))
def test_parser_property(scheme: str, rest: str) -> None:
    loc_str = scheme + rest
    try:
        loc = parse_location(loc_str, env=NOENV)
    except LocationError:
        return
    prefix = getattr(loc, "prefix", "")
    assert ".." not in prefix.split("/")
    assert "." not in prefix.split("/")
    assert not prefix.startswith("/") and not prefix.endswith("/")
    assert "//" not in prefix
    assert "\x00" not in loc.display


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parser_never_raises_other(text: str) -> None:
    try:
        parse_location(text, env=NOENV)
    except LocationError:
        pass


# --------------------------------------------------------------------------- safe paths


@pytest.mark.parametrize("key,prefix,rel", [
    ("models/repo/config.pbtxt", "models/repo", "config.pbtxt"),
    ("models/repo/1/model.onnx", "models/repo", "1/model.onnx"),
    ("models/repo/1/model.onnx", "/models/repo/", "1/model.onnx"),
    ("a/b", "", "a/b"),
    ("p/with space/ünï", "p", "with space/ünï"),
    ("p/..x/x..", "p", "..x/x.."),
])
def test_safe_relpath_ok(key: str, prefix: str, rel: str) -> None:
    assert safe_relpath(key, prefix) == rel


@pytest.mark.parametrize("key,prefix", [
    ("models/repo", "models/repo"),            # the directory itself
    ("models/repo/", "models/repo"),           # empty remainder
    ("models/repo2/x", "models/repo"),         # sibling, not inside
    ("other/x", "models/repo"),
    ("models/repo/../x", "models/repo"),
    ("models/repo/a/../../x", "models/repo"),
    ("models/repo/./x", "models/repo"),
    ("models/repo//x", "models/repo"),         # empty segment / absolute remainder
    ("/etc/passwd", ""),
    ("models/repo/a\\..\\x", "models/repo"),
    ("models/repo/a\x00", "models/repo"),
    ("models/repo/a\nb", "models/repo"),
    ("models/repo/" + "n" * 256, "models/repo"),
    ("models/repo/" + "/".join(["d" * 200] * 21), "models/repo"),
    ("models/repo/a/", "models/repo"),
    ("", ""),
])
def test_safe_relpath_refused(key: str, prefix: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(key, prefix)


def test_safe_join(tmp_path: os.PathLike[str]) -> None:
    dest = os.fspath(tmp_path)
    assert safe_join(dest, "1/model.onnx") == type(safe_join(dest, "a"))(dest, "1", "model.onnx")
    for bad in ("../x", "/abs", "a/../../x", "", "a//b", "a\\b"):
        with pytest.raises(UnsafePathError):
            safe_join(dest, bad)
    outside = os.path.join(dest, "..", "outside")
    os.makedirs(outside, exist_ok=True)
    os.makedirs(os.path.join(dest, "d"))
    os.symlink(outside, os.path.join(dest, "d", "link"))
    with pytest.raises(UnsafePathError) as exc:
        safe_join(os.path.join(dest, "d"), "link/x")
    assert "symlink" in str(exc.value)
    # A symlink inside the destination that stays inside is fine.
    os.makedirs(os.path.join(dest, "d", "real"))
    os.symlink(os.path.join(dest, "d", "real"), os.path.join(dest, "d", "inner"))
    assert safe_join(os.path.join(dest, "d"), "inner/x").name == "x"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "..", ".", "", "b c", "\\", "\x00", "ü", "/"]),
                max_size=8).map("/".join))
def test_safe_relpath_property(rel: str) -> None:
    try:
        out = safe_relpath("p/" + rel, "p")
    except UnsafePathError:
        return
    parts = out.split("/")
    assert all(p not in ("", ".", "..") for p in parts)
    assert not os.path.isabs(out)
    assert os.path.normpath(out) == out
