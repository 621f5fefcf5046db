"""Hostile input: object keys that try to escape the model directory, planted symlinks,
malformed or huge config/credential files, and property-based/fuzz tests of the parsers
(location grammar, Dragonfly headers, range planning, task IDs).

Every refusal is a named :mod:`dfrepo.errors` exception and nothing is written outside
the destination.  Hypothesis runs are bounded (``max_examples``) and deadline-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dfrepo import errors
from dfrepo.credentials import load_credential_file
from dfrepo.dragonfly import (
    AZURE_SAS_QUERY_PARAMS,
    DEFAULT_FILTERED_QUERY_PARAMS,
    DragonflyConfig,
    is_azure_sas_url,
    load_dragonfly_config,
    request_headers,
    task_id,
    task_id_for_request,
)
from dfrepo.engine.plan import MIN_DIRECT_RANGE, SMALL_TO_SOURCE, MiB, auto_piece_length, plan_spans
from dfrepo.engine.settings import TransferConfig
from dfrepo.locations import (
    AzureLocation,
    GCSLocation,
    LocalLocation,
    S3Location,
    parse_location,
)
from dfrepo.pull import pull
from dfrepo.safepaths import safe_join, safe_relpath

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE_KEYS = {
    "dotdot": "../evil.txt",
    "dotdot-nested": "a/../../evil.txt",
    "absolute": "/abs.txt",  # key "m//abs.txt"
    "backslash": "a\\..\\..\\evil.txt",
    "nul": "nul\x00x.txt",
    "control": "ctl\x01.txt",
    "dot": "./dot.txt",
    "long-name": "L" * 300 + ".txt",
}


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# =============================================================== object keys via moto (real S3 API)


@pytest.mark.servers
@pytest.mark.parametrize("case", sorted(HOSTILE_KEYS))
def test_hostile_key_is_refused(moto_s3, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    client = moto_s3.client()
    bucket = "hostile-keys"
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object(Bucket=bucket, Key=f"{case}/config.pbtxt", Body=b"name: 'm'\n")
    client.put_object(Bucket=bucket, Key=f"{case}/{HOSTILE_KEYS[case]}", Body=b"pwned")
    env = {**moto_s3.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(tmp_path / "none.json")}
    work = tmp_path / "work"
    work.mkdir()
    before = files_under(tmp_path)
    with pytest.raises(errors.UnsafePathError) as ei:
        pull(moto_s3.s3_url(bucket, case), work / "dest", env=env,
             transfer=TransferConfig(fsync=False, range_size=64 * 1024))
    assert isinstance(ei.value, errors.ConfigError)
    assert len(str(ei.value)) < 600, "a hostile key must not blow up the message"
    assert "\x00" not in str(ei.value)
    assert files_under(tmp_path) == before, "nothing may be written anywhere"
    assert not (work / "dest").exists()


@pytest.mark.servers
def test_planted_symlink_in_destination_is_refused(moto_s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A symlink planted in dest (pointing outside) makes dest non-empty: refused before
    any byte moves; the outside directory stays empty."""
    client = moto_s3.client()
    bucket = "hostile-symlink"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="m/1/model.bin", Body=b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "1").symlink_to(outside)
    env = {**moto_s3.triton_env(), "TRITON_DRAGONFLY_CONFIG_PATH": str(tmp_path / "none.json")}
    with pytest.raises(errors.ConfigError):
        pull(moto_s3.s3_url(bucket, "m"), dest, env=env, transfer=TransferConfig(fsync=False))
    assert list(outside.iterdir()) == []
    assert [p.name for p in dest.iterdir()] == ["1"]


# =============================================================== safe_join / safe_relpath (unit)


@pytest.mark.parametrize("rel", [
    "../x", "a/../../x", "/etc/passwd", "a\\b", "a\x00b", "", "a//b", "./a", "a/.", "a/\x7f",
    "x" * 256, "a/" * 2100 + "b",
])
def test_safe_join_refuses(tmp_path: Path, rel: str) -> None:
    with pytest.raises(errors.UnsafePathError):
        safe_join(tmp_path, rel)
    with pytest.raises(errors.UnsafePathError):
        safe_relpath("m/" + rel, "m")


def test_safe_join_refuses_symlink_escape(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    (dest / "abs").symlink_to("/")
    for rel in ("link/x.bin", "link/sub/x.bin", "abs/etc/passwd", "link"):
        with pytest.raises(errors.UnsafePathError):
            safe_join(dest, rel)
    (dest / "inner").mkdir()
    (dest / "ok").symlink_to(dest / "inner")  # a symlink that stays inside is fine
    assert safe_join(dest, "ok/x.bin") == dest / "ok" / "x.bin"


def test_safe_relpath_outside_prefix() -> None:
    with pytest.raises(errors.UnsafePathError):
        safe_relpath("m2/x", "m")
    with pytest.raises(errors.UnsafePathError):
        safe_relpath("m", "m")
    assert safe_relpath("m/a/b.txt", "/m/") == "a/b.txt"


SEGMENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@FUZZ
@given(st.lists(SEGMENT, min_size=1, max_size=6).map("/".join))
def test_fuzz_safe_join_stays_inside(tmp_path_factory: pytest.TempPathFactory, rel: str) -> None:
    base = tmp_path_factory.getbasetemp() / "safe-join-base"
    base.mkdir(exist_ok=True)
    try:
        out = safe_join(base, rel)
    except errors.UnsafePathError:
        return
    real = os.path.realpath(out)
    assert real.startswith(os.path.realpath(base) + os.sep)
    assert ".." not in rel.split("/") and "\x00" not in rel and "\\" not in rel


# =============================================================== config / credential files


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, str):
        p.write_text(text)
    else:
        p.write_bytes(text)
    return p


BAD_DRAGONFLY = {
    "huge-10MB": json.dumps({"tag": "x" * 10_000_000}),
    "huge-garbage": "x" * 10_000_000,
    "nested-array": "[" * 100_000 + "]" * 100_000,
    "nested-object": '{"header":' * 50_000 + "1" + "}" * 50_000,
    "not-object": "[1, 2]",
    "wrong-type-proxy": '{"proxy": 42}',
    "wrong-type-header": '{"header": ["a", "b"]}',
    "wrong-type-filter": '{"filter": {"a": 1}}',
    "priority-float": '{"priority": 1.5}',
    "priority-nan": '{"priority": NaN}',
    "priority-huge-int": '{"priority": 1' + "0" * 5000 + "}",
    "unknown-scheme-proxy": '{"proxy": "socks5://127.0.0.1:1080"}',
    "ftp-proxy": '{"proxy": "ftp://127.0.0.1:21"}',
    "header-crlf": '{"header": {"X-A": "v\\r\\nX-Injected: 1"}}',
    "header-owned": '{"header": {"Range": "bytes=0-"}}',
    "piece-too-small": '{"piece_length": 1024}',
    "not-utf8": b"\xff\xfe\x00{",
    "trailing-comma": '{"proxy": "http://127.0.0.1:4001",}',
}


@pytest.mark.parametrize("case", sorted(BAD_DRAGONFLY))
def test_bad_dragonfly_config_is_config_error(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, "dragonfly_config.json", BAD_DRAGONFLY[case])
    t0 = time.monotonic()
    with pytest.raises(errors.ConfigError):
        load_dragonfly_config(path, env={})
    assert time.monotonic() - t0 < 2.0


def test_dragonfly_config_fifo_does_not_hang(tmp_path: Path) -> None:
    """A special file (here /dev/zero) is read at most MAX_CONFIG_BYTES + 1."""
    t0 = time.monotonic()
    with pytest.raises(errors.ConfigError):
        load_dragonfly_config("/dev/zero", env={})
    assert time.monotonic() - t0 < 2.0


BAD_CREDENTIALS = {
    "huge-garbage": "x" * 10_000_000,
    "not-object": "[]",
    "s3-not-object": '{"s3": ["a"]}',
    "s3-entry-wrong-type": '{"s3": {"m": "secret"}}',
    "s3-key-wrong-type": '{"s3": {"m": {"key_id": 1, "secret_key": 2}}}',
    "s3-half-pair": '{"s3": {"m": {"key_id": "AKIA"}}}',
    "gs-wrong-type": '{"gs": {"m": {"a": 1}}}',
    "as-wrong-type": '{"as": {"m": "key"}}',
    "as-bad-auth-type": '{"as": {"m": {"account_str": "a", "auth_type": "telepathy"}}}',
    "not-utf8": b"\xff\xfe\x00{",
    "huge-int": '{"s3": 1' + "0" * 5000 + "}",
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_bad_credential_file_is_credentials_error(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, "cloud_credential.json", BAD_CREDENTIALS[case])
    t0 = time.monotonic()
    with pytest.raises(errors.CredentialsError) as ei:
        load_credential_file(path)
    assert time.monotonic() - t0 < 2.0
    assert "AKIA" not in str(ei.value) and "secret" not in str(ei.value).replace("secret_key", "")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"s3": ' * 50_000 + "1" + "}" * 50_000],
                         ids=["array", "object"])
def test_deeply_nested_credential_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(errors.CredentialsError):
        load_credential_file(_write(tmp_path, "cloud_credential.json", text))


def test_huge_valid_credential_file(tmp_path: Path) -> None:
    text = json.dumps({"s3": {"m": {"key_id": "k" * 5_000_000, "secret_key": "s" * 5_000_000}}})
    with pytest.raises(errors.CredentialsError):
        load_credential_file(_write(tmp_path, "cloud_credential.json", text))


@pytest.mark.parametrize("location", [
    "http://example.com/m", "S3://b/m", "GS://b/m", "ftp://x/y", "s3://", "gs:///m", "as://acct",
    "as://acct/UPPER/m", "as://acct/c/m?sv=1&sig=x", "s3://b/../m", "gs://b/./m",
    "s3://b/m\x00", "file://remotehost/m", "file://[", "file://[]", "s3://http://h:1/b/m/x://y", "s3://h:99999/b/m", "",
])
def test_bad_locations(location: str) -> None:
    with pytest.raises(errors.LocationError):
        parse_location(location, env={})


# =============================================================== property-based: locations

BUCKET = st.from_regex(r"[a-z0-9][a-z0-9\-]{1,20}[a-z0-9]", fullmatch=True)
KEYSEG = st.from_regex(r"[0-9a-zA-Z_\-][0-9a-zA-Z._\-]{0,15}", fullmatch=True).filter(lambda s: s not in (".", ".."))
PREFIX = st.lists(KEYSEG, min_size=0, max_size=4).map("/".join)


@FAST
@given(BUCKET, PREFIX, st.integers(1, 65535), st.booleans())
def test_prop_s3_host_port_form(bucket: str, prefix: str, port: int, https: bool) -> None:
    loc = parse_location(f"s3://{'https://' if https else ''}127.0.0.1:{port}/{bucket}/{prefix}", env={})
    assert isinstance(loc, S3Location)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert loc.endpoint_url == f"{'https' if https else 'http'}://127.0.0.1:{port}"
    again = parse_location(loc.display, env={})
    assert (again.bucket, again.prefix, again.endpoint_url) == (loc.bucket, loc.prefix, loc.endpoint_url)


@FAST
@given(BUCKET, PREFIX, st.sampled_from(["gs", "s3"]), st.integers(0, 3))
def test_prop_gs_s3_plain_form_and_slashes(bucket: str, prefix: str, scheme: str, extra: int) -> None:
    slashes = "/" * (1 + extra)
    loc = parse_location(f"{scheme}://{bucket}{slashes}{prefix.replace('/', slashes)}{slashes}", env={})
    assert isinstance(loc, GCSLocation if scheme == "gs" else S3Location)
    assert loc.bucket == bucket and loc.prefix == prefix


@FAST
@given(st.from_regex(r"[a-z0-9]{3,24}", fullmatch=True), st.from_regex(r"[a-z0-9]{3,20}", fullmatch=True), PREFIX)
def test_prop_azure_form(account: str, container: str, prefix: str) -> None:
    loc = parse_location(f"as://{account}/{container}/{prefix}", env={})
    assert isinstance(loc, AzureLocation)
    assert (loc.account, loc.container, loc.prefix) == (account, container, prefix)
    assert loc.endpoint == f"https://{account}.blob.core.windows.net"


@FUZZ
@given(st.one_of(
    st.text(max_size=80),
    st.builds(lambda s, t: s + t, st.sampled_from(["s3://", "gs://", "as://", "file://", "S3://", "x://"]),
              st.text(max_size=80)),
))
def test_fuzz_parse_location(text: str) -> None:
    try:
        loc = parse_location(text, env={})
    except errors.LocationError as exc:
        assert "?" not in str(exc).split("(location", 1)[-1] or "?" not in text.partition("?")[0]
        return
    assert isinstance(loc, (S3Location, GCSLocation, AzureLocation, LocalLocation))
    if not isinstance(loc, LocalLocation):
        assert ".." not in loc.prefix.split("/") and "." not in loc.prefix.split("/")
        assert not any(ord(c) < 0x20 for c in loc.prefix)


# =============================================================== property-based: headers

HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_.:@", min_size=1, max_size=30)
QKEY = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
QVAL = st.text(alphabet=string.ascii_letters + string.digits + "-_.~*;%+/=", max_size=30)


@st.composite
def urls(draw: st.DrawFn) -> str:
    host = draw(st.sampled_from(["127.0.0.1:9000", "b.s3.amazonaws.com", "acct.blob.core.windows.net",
                                 "storage.googleapis.com"]))
    path = "/" + "/".join(draw(st.lists(KEYSEG, min_size=1, max_size=4)))
    pairs = draw(st.lists(st.tuples(QKEY, QVAL), max_size=5))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)
    return f"https://{host}{path}" + (f"?{query}" if query else "")


@FAST
@given(urls(), st.none() | HEADER_TEXT, st.none() | st.lists(QKEY, max_size=4).map(tuple),
       st.none() | st.text(max_size=40), st.booleans())
def test_prop_request_headers(url: str, tag: str | None, filt: tuple[str, ...] | None, version: str | None,
                              in_task_id: bool) -> None:
    try:
        df = DragonflyConfig(proxy="http://127.0.0.1:4001", tag=tag, filter=filt, version_in_task_id=in_task_id)
    except errors.ConfigError:
        return
    try:
        headers = request_headers(df, url, version=version)
    except errors.ConfigError:
        assert version is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in version)
        return
    for name, value in headers.items():
        assert all(0x20 <= ord(c) != 0x7F for c in value if c != "\t"), (name, value)
        assert "\r" not in value and "\n" not in value
    assert headers["X-Dragonfly-Use-P2P"] == "true"
    names = headers["X-Dragonfly-Filtered-Query-Params"].split(",")
    defaults = list(dict.fromkeys(DEFAULT_FILTERED_QUERY_PARAMS))  # the list has repeats; sent once
    assert names[: len(defaults)] == defaults
    assert set(AZURE_SAS_QUERY_PARAMS) <= set(names) or not is_azure_sas_url(url)
    assert headers["X-Dragonfly-Filter"] == "&".join(names)
    assert set(filt or ()) <= set(names)
    # Nothing of the URL's query (signatures) is copied into a header value (unless the
    # generated value also happens to be part of a filter name, tag or version, which are sent).
    sent_on_purpose = [*names, tag or "", version or ""]  # names: every filter, defaults included
    for seg in url.partition("?")[2].split("&"):
        val = seg.partition("=")[2]
        if len(val) >= 12 and not any(val in x for x in sent_on_purpose):
            assert all(val not in v for v in headers.values())
    if in_task_id and version and version.strip().strip('"').strip():
        assert headers.get("X-Dragonfly-Tag", "").endswith(version.strip()[2:].strip('"').strip()
                                                           if version.strip()[:2] in ("W/", "w/")
                                                           else version.strip().strip('"').strip())


# =============================================================== property-based: range planning


@FAST
@given(st.integers(0, 1 << 40), st.integers(64 * 1024, 1 << 31), st.booleans(), st.booleans(),
       st.sampled_from([None, 4 * MiB, 8 * MiB, 64 * MiB]), st.integers(1, 64))
def test_prop_plan_covers_exactly_once(size: int, range_size: int, via_peer: bool, peer_ranges: bool,
                                       piece_length: int | None, connections: int) -> None:
    assume(size // min(range_size, MIN_DIRECT_RANGE) < 20_000)  # keep each example cheap
    plan = plan_spans(size, range_size=range_size, via_peer=via_peer, peer_ranges=peer_ranges,
                      piece_length=piece_length, connections=connections)
    if size == 0:
        assert plan == [(0, -1, False)]
        return
    pos = 0
    for span in plan:
        assert span.start == pos, "ranges must be contiguous and ordered"
        assert span.start <= span.end
        pos = span.end + 1
    assert pos == size
    if not via_peer:
        # no short tail: every range but a lone one is at least half a range long, where a
        # range is range_size, or less (not under MIN_DIRECT_RANGE) to give every connection work
        floor = min(range_size, MIN_DIRECT_RANGE)
        assert len(plan) == 1 or all(s.length >= floor // 2 for s in plan)
        assert all(s.length < 2 * range_size for s in plan)
        assert len(plan) >= min(2 * connections, size // range_size, size // MIN_DIRECT_RANGE)
        return
    if size <= SMALL_TO_SOURCE or not peer_ranges:
        assert plan == [(0, size - 1, False)], "small objects and whole-file mode: one plain GET"
        return
    unit = piece_length or auto_piece_length(size)
    for span in plan:
        assert span.ranged
        assert span.length > SMALL_TO_SOURCE, "a range of <= 4 MiB would skip P2P on a real dfdaemon"
        assert span.start % unit == 0, "ranges start on piece boundaries"


@FAST
@given(st.integers(SMALL_TO_SOURCE + 1, 1 << 38), st.integers(64 * 1024, 1 << 30), st.integers(1, 1 << 26))
def test_prop_plan_after_probe_covers_the_rest(size: int, range_size: int, offset: int) -> None:
    assume(offset < size and size // range_size < 20_000)
    plan = plan_spans(size, range_size=range_size, via_peer=True, offset=offset)
    assert plan[0].start == offset and plan[-1].end == size - 1
    assert all(a.end + 1 == b.start for a, b in zip(plan, plan[1:], strict=False))
    assert all(s.ranged for s in plan)
    assert len(plan) == 1 or all(s.length > SMALL_TO_SOURCE for s in plan)


# =============================================================== property-based: task IDs


@FAST
@given(urls(), st.none() | HEADER_TEXT, st.none() | HEADER_TEXT,
       st.none() | st.integers(4 << 20, 64 << 20), st.sampled_from(["A", "B"]))
def test_prop_task_id_matches_independent_peer(url: str, tag: str | None, app: str | None, piece: int | None,
                                               canon: str) -> None:
    """dfrepo's task ID equals the stand-in peer's independent implementation."""
    from dfpeer import taskid as peer_taskid

    filtered = list(DEFAULT_FILTERED_QUERY_PARAMS)
    ours = task_id(url, tag=tag, application=app, piece_length=piece, filtered_query_params=filtered,
                   canonicalization=canon)  # type: ignore[arg-type]
    theirs = peer_taskid.task_id(url, tag=tag, application=app, piece_length=piece, filtered=filtered,
                                 canonicalization=canon)  # type: ignore[arg-type]
    assert ours == theirs
    assert len(ours) == 64 and all(c in "0123456789abcdef" for c in ours)


@FAST
@given(urls(), st.text(alphabet="0123456789abcdef", min_size=16, max_size=64), st.none() | HEADER_TEXT)
def test_prop_task_id_ignores_signatures(url: str, sig: str, tag: str | None) -> None:
    """Differently signed URLs of one object share one task; the tag splits tasks."""
    sep = "&" if "?" in url else "?"
    a = task_id(url + f"{sep}X-Amz-Signature={sig}&X-Amz-Date=20260101T000000Z", tag=tag)
    b = task_id(url + f"{sep}X-Amz-Date=20270101T000000Z&X-Amz-Signature={sig[::-1]}", tag=tag)
    assert a == b
    assert task_id(url, tag=(tag or "") + "@v2") != task_id(url, tag=tag)


@FAST
@given(urls(), st.none() | HEADER_TEXT, st.text(max_size=30))
def test_prop_task_id_for_request_uses_headers(url: str, tag: str | None, version: str) -> None:
    df = DragonflyConfig(proxy="http://127.0.0.1:4001", tag=tag)
    try:
        headers = request_headers(df, url, version=version)
    except errors.ConfigError:
        return
    names = headers["X-Dragonfly-Filtered-Query-Params"].split(",")
    expected = task_id(url, tag=headers.get("X-Dragonfly-Tag"), filtered_query_params=names)
    assert task_id_for_request(url, headers) == expected
    content = {"X-Dragonfly-Content-For-Calculating-Task-ID": "blob-1"}
    assert task_id_for_request(url, content) == hashlib.sha256(b"blob-1").hexdigest()


# =============================================================== fuzz: file parsers


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(
                                  st.sampled_from(["proxy", "header", "filter", "tag", "priority", "piece_length",
                                                   "use_p2p", "fallback_direct", "filter_dialects", "x"]) | st.text(max_size=8),
                                  c, max_size=4),
                              max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_fuzz_dragonfly_config_file(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-dragonfly.json"
    path.write_bytes(blob)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = load_dragonfly_config(path, env={})
        except errors.ConfigError:
            return
    assert isinstance(cfg, DragonflyConfig)


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                  st.sampled_from(["s3", "gs", "as", "m", "key_id", "secret_key", "session_token",
                                                   "region", "account_str", "account_key", "auth_type"]),
                                  c, max_size=4),
                              max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_fuzz_credential_file(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-credential.json"
    path.write_bytes(blob)
    try:
        load_credential_file(path)
    except errors.CredentialsError:
        pass


@FUZZ
@given(st.text(max_size=120))
def test_fuzz_redact_url_never_leaks_query(text: str) -> None:
    from dfrepo.redact import redact_url

    out = redact_url(text)
    query = text.partition("?")[2]
    if len(query) >= 8:
        assert query not in out
