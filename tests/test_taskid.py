"""Task IDs against every upstream vector (dragonfly-proxy.md §2.2, §2.4, §2.5) + properties."""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfrepo.dragonfly import (
    AZURE_SAS_QUERY_PARAMS,
    DEFAULT_FILTERED_QUERY_PARAMS,
    canonical_url,
    check_task_id,
    parse_byte_size,
    task_id,
    task_id_for_request,
)
from dfrepo.errors import ConfigError

HEX64 = re.compile(r"[0-9a-f]{64}")

# (i) dragonflyoss/client id_generator tests: url, piece_length, tag, application, filtered, revision, expected
TABLE_I = [
    ("https://example.com", 1024, "foo", "bar", [], "v1.0", "5844f27a257287e9b734256bb25603d8005422ced8c0377f15063ec11963b25f"),
    ("https://example.com", None, "foo", "bar", [], None, "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca"),
    ("https://example.com", None, "foo", None, [], None, "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a"),
    ("https://example.com", None, None, "bar", [], None, "c9f9261b7305c24371244f9f149f5d4589ed601348fdf22d7f6f4b10658fdba2"),
    ("https://example.com", 1024, None, None, [], None, "9f7c9aafbc6f30f8f41a96ca77eeae80c5b60964b3034b0ee43ccf7b2f9e52b8"),
    ("https://example.com?foo=foo&bar=bar", None, None, None, ["foo", "bar"], None,
     "457b4328cde278e422c9e243f7bfd1e97f511fec43a80f535cf6b0ef6b086776"),
    ("https://example.com", None, None, None, [], "v1.0", "b171331534b80e0bf91da38ebbfcdbf4d177898f4b9beac44f14733e3f004d4e"),
]  # fmt: skip

# (ii) canonicalization-B vectors: url, piece_length, tag, application, filtered, expected, also_A
TABLE_II = [
    ("https://example.com/file.txt?Expires=e1&Signature=s1&foo=bar", 4194304, "tag1", "app1", ["Expires", "Signature"],
     "2a0c4c713d7f2f65f36b78b79c4b78a6bf5d5f67b76730ed13485d3271482f1c", True),
    ("https://example.com/file.txt", None, None, None, [],
     "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0", True),
    ("https://example.com/file.txt?z=9&b=2&a=1", None, "foo", "bar", ["z"],
     "8b3f6e9b9b8fe20903bced565cfd1d0aaef354a4c17573f0c2c1979210443f9d", False),
    ("https://example.com/file.txt?b=2&a=1&b=1", None, None, None, ["c"],
     "7c8801d0596be5e8f9449d5c4af23866c72fe5205119c0e5912981f3b16a37aa", False),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", 1024, None, None, ["none"],
     "6196a6846023f6d3c1e4d30f6c86f3d4186e4c664a33e5692b0e04e49b26a9af", False),
    ("https://example.com/file.txt?a=1&b=2", None, "foo", None, ["a", "b"],
     "c8f4b41117329d54af920010394f6f607bac707e933ab2f18d372e3dd4c7fcb3", True),
    ("https://example.com/file.txt?b=2&a=1", None, None, None, [],
     "980ee327518ccc5a7c30703e1a2232e8ba9047b39431f940636c85b6146f8b9a", True),
    ("https://example.com/file.txt?a=1;x&b=2", None, None, None, ["none"],
     "370933e9d7ab42b3ed90287213cd5f8def6091c8606da5b2dc79436061b06c34", False),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", None, None, None, ["x", "m"],
     "3570c3c808f06fd250a7a60634b9275d72c56edc248576508bb06264c2c65825", True),
    ("http://registry.example.com/v2/library/ubuntu/manifests/latest", None, None, None, [],
     "0b6500b31c7eea2929393e154299bc81ebbb613c24fa7f5f33e893d585f4d629", True),
]  # fmt: skip

# (iii) derived canonicalization-A vectors for the rows where A and B differ
TABLE_III = [
    ("https://example.com/file.txt?z=9&b=2&a=1", None, "foo", "bar", ["z"],
     "https://example.com/file.txt?b=2&a=1", "46c55648464dc545e5dfe1bd12bf3102dfb251f18e004f7656537223b36094ee"),
    ("https://example.com/file.txt?b=2&a=1&b=1", None, None, None, ["c"],
     "https://example.com/file.txt?b=2&a=1&b=1", "0611a7dec7addbfb7985417d761366140bfd03eabaea8ccfa5eaa2cf855ce96a"),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", 1024, None, None, ["none"],
     "https://example.com/file.txt?k=a+b&m=x*y&n=c%7Ed", "61167f6a427c34a23a100a2055297005f7122de71b21294519b2695500d302f8"),
    ("https://example.com/file.txt?a=1;x&b=2", None, None, None, ["none"],
     "https://example.com/file.txt?a=1%3Bx&b=2", "2505099924a7b35e42ee91e3bd6f4ab73fd49559c784872b5eeb222cc69b8b3c"),
]  # fmt: skip

# Canonical strings from dragonfly-client-util/src/url/mod.rs tests (generation B)
CANONICAL_B = [
    ("https://example.com/file.txt?z=9&b=2&a=1", ["z"], "https://example.com/file.txt?a=1&b=2"),
    ("https://example.com/file.txt?b=2&a=1&b=1", ["c"], "https://example.com/file.txt?a=1&b=2&b=1"),
    ("https://example.com?foo=foo", ["foo"], "https://example.com"),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", ["none"], "https://example.com/file.txt?k=a+b&m=x%2Ay&n=c~d"),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", ["x", "m"], "http://www.xx.yy/path?u=f#size"),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", [], "http://www.xx.yy/path?u=f&x=y&m=z&x=s#size"),
    ("https://example.com/file.txt?a=1;x&b=2", ["none"], "https://example.com/file.txt?b=2"),
]

WORKED_EXAMPLE_ID = "cbd6863e3dd3353557d3f2338201ee364475842674cdf8f813efb787989f4e1a"
WORKED_EXAMPLE_BARE = "https://my-bucket.s3.us-east-1.amazonaws.com/models/llama/model-00001-of-00002.safetensors"


@pytest.mark.parametrize("canon", ["A", "B"])
@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "revision", "expected"), TABLE_I)
def test_table_i(canon, url, piece, tag, app, filtered, revision, expected):
    got = task_id(
        url,
        piece_length=piece,
        tag=tag,
        application=app,
        filtered_query_params=filtered,
        revision=revision,
        canonicalization=canon,
    )
    assert got == expected


@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "expected", "also_a"), TABLE_II)
def test_table_ii_canonicalization_b(url, piece, tag, app, filtered, expected, also_a):
    got = task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered)
    assert got == expected
    if also_a:  # rows where the old generation gives the same string
        assert task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered,
                       canonicalization="A") == expected  # fmt: skip


@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "canonical", "expected"), TABLE_III)
def test_table_iii_canonicalization_a(url, piece, tag, app, filtered, canonical, expected):
    assert canonical_url(url, filtered, canonicalization="A") == canonical
    got = task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered,
                  canonicalization="A")  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(("url", "filtered", "expected"), CANONICAL_B)
def test_canonical_strings_b(url, filtered, expected):
    assert canonical_url(url, filtered) == expected


def test_content_vector_ignores_everything_else():
    expected = "e2d0fe1585a63ec6009c8016ff8dda8b17719a637405a4e23c0ff81339148249"
    assert task_id("https://x.example/whatever?a=1", tag="t", piece_length=4194304, content="This is a test file") == expected
    headers = {"X-Dragonfly-Content-For-Calculating-Task-ID": "This is a test file", "X-Dragonfly-Tag": "t"}
    assert task_id_for_request("https://x.example/y", headers) == expected


def test_v1_0_0_vector_is_url_tag_app_piece_standard():
    expected = "27554d06dfc788c2c2c60e01960152ffbd4b145fc103fcb80b432b4dc238a6fe"
    assert hashlib.sha256(b"https://example.comfoobar1024STANDARD").hexdigest() == expected
    for canon in ("A", "B"):
        got = task_id("https://example.com", tag="foo", application="bar", piece_length=1024,
                      filtered_query_params=[], canonicalization=canon)  # fmt: skip
        assert got == expected


@pytest.mark.parametrize("canon", ["A", "B"])
def test_worked_example_presigned_s3(canon):
    signed = (
        WORKED_EXAMPLE_BARE + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=deadbeef"
    )
    assert task_id(signed, canonicalization=canon) == WORKED_EXAMPLE_ID
    assert task_id(WORKED_EXAMPLE_BARE, canonicalization=canon) == WORKED_EXAMPLE_ID
    # what dfdaemon computes from dfrepo's headers, too
    assert task_id_for_request(signed, {}, canonicalization=canon) == WORKED_EXAMPLE_ID


def test_empty_strings_are_absent():
    base = task_id("https://example.com/f")
    assert task_id("https://example.com/f", tag="", application="", revision="") == base


def test_none_filter_means_default_list():
    url = "https://example.com/f?X-Amz-Signature=1&keep=2"
    assert task_id(url) == task_id(url, filtered_query_params=DEFAULT_FILTERED_QUERY_PARAMS)
    assert canonical_url(url) == "https://example.com/f?keep=2"
    # an empty list is different: B hashes the raw URL
    assert canonical_url(url, []) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM:443/a/./b/../c?x=1", "https://example.com/a/c?x=1"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:8080/", "http://example.com:8080"),
        ("https://example.com/a b/é", "https://example.com/a%20b/%C3%A9"),
        ("https://example.com/a/..", "https://example.com"),
        ("https://example.com/a/b/..", "https://example.com/a/"),
        ("http://[0:0:0::1]:8080/x", "http://[::1]:8080/x"),
        ("https://example.com/f?a=%zz&b=%FF", "https://example.com/f?a=%25zz&b=%EF%BF%BD"),
        ("https://example.com/f?", "https://example.com/f"),
        ("https://example.com/f?a", "https://example.com/f?a="),
    ],
)
def test_whatwg_normalization(url, expected):
    assert canonical_url(url, ["none"]) == expected


@pytest.mark.parametrize("bad", ["not a url", "/relative/path", "https://", "https://h:99999/x", "1http://x/"])
def test_unparsable_urls_raise_config_error(bad):
    with pytest.raises(ConfigError):
        task_id(bad)


def test_empty_filter_b_does_not_parse():
    # dfdaemon B hashes the raw string when the filter list is empty, even if odd.
    assert canonical_url("HTTPS://Example.COM:443/x", []) == "HTTPS://Example.COM:443/x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4194304", 4194304), ("4mib", 4194304), ("8MiB", 8388608), ("4mb", 4000000), ("4 MiB", 4194304),
     ("1.5KiB", 1536), ("4194304b", 4194304), ("4 bananas", None), ("", None), ("-1", None)],
)  # fmt: skip
def test_parse_byte_size(text, expected):
    assert parse_byte_size(text) == expected


def test_task_id_for_request_reads_headers_like_dfdaemon():
    url = "https://example.com/file.txt?Expires=e1&Signature=s1&foo=bar"
    headers = {
        "x-dragonfly-tag": " tag1 ",
        "X-Dragonfly-Application": "app1",
        "X-Dragonfly-Piece-Length": "4mib",
        "X-Dragonfly-Filtered-Query-Params": "Expires, Signature",
        "X-Dragonfly-Filter": "foo",  # legacy Go header: ignored by the Rust proxy
    }
    assert task_id_for_request(url, headers) == "2a0c4c713d7f2f65f36b78b79c4b78a6bf5d5f67b76730ed13485d3271482f1c"
    # an unparsable piece length is ignored, as dfdaemon ignores it
    headers["X-Dragonfly-Piece-Length"] = "lots"
    assert task_id_for_request(url, headers) == task_id(
        url, tag="tag1", application="app1", filtered_query_params=["Expires", "Signature"]
    )


def test_task_id_for_request_empty_filter_header_filters_nothing():
    url = "https://example.com/f?X-Amz-Signature=1"
    got = task_id_for_request(url, {"X-Dragonfly-Filtered-Query-Params": ""})
    assert got == task_id(url, filtered_query_params=[""])
    assert got != task_id("https://example.com/f")


def test_check_task_id(caplog):
    url = "https://b.s3.amazonaws.com/k?X-Amz-Signature=SECRETSIG"
    tid = task_id(url)
    assert check_task_id(tid, {"X-Dragonfly-Task-Id": tid.upper()}, url)
    assert check_task_id(tid, {"x-dragonfly-task-id": tid}, url)
    with caplog.at_level(logging.DEBUG, logger="dfrepo.dragonfly"):
        assert not check_task_id(tid, {}, url)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dfrepo.dragonfly"):
        assert not check_task_id(tid, {"X-Dragonfly-Task-ID": "0" * 64}, url)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "0" * 64 in text and tid in text
    assert "SECRETSIG" not in text and "https://b.s3.amazonaws.com/k?<redacted>" in text


# --------------------------------------------------------------------------- properties

_key_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=8)
_values = st.text(max_size=12).map(lambda v: quote(v, safe=""))
_paths = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8), max_size=4)
_SIGNATURE_KEYS = sorted(set(DEFAULT_FILTERED_QUERY_PARAMS) | set(AZURE_SAS_QUERY_PARAMS))
_FILTER = list(DEFAULT_FILTERED_QUERY_PARAMS) + list(AZURE_SAS_QUERY_PARAMS)


def _url(path: list[str], pairs: list[tuple[str, str]]) -> str:
    base = "https://bucket.example.com/" + "/".join(path)
    return base + ("?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else "")


@settings(max_examples=200)
@given(
    path=_paths,
    kept=st.lists(st.tuples(_key_chars, _values), max_size=4),
    secret=st.lists(st.tuples(st.sampled_from(_SIGNATURE_KEYS), _values), min_size=1, max_size=8),
    data=st.data(),
    canon=st.sampled_from(["A", "B"]),
)
def test_filtered_params_never_affect_the_id(path, kept, secret, data, canon):
    kept = [(k, v) for k, v in kept if k not in _FILTER]
    mixed = list(kept)
    for pair in secret:
        mixed.insert(data.draw(st.integers(0, len(mixed))), pair)
    assert task_id(_url(path, mixed), filtered_query_params=_FILTER, canonicalization=canon) == task_id(
        _url(path, kept), filtered_query_params=_FILTER, canonicalization=canon
    )


@settings(max_examples=200)
@given(
    pairs=st.dictionaries(_key_chars, _values, min_size=2, max_size=6).map(lambda d: list(d.items())),
    data=st.data(),
)
def test_param_order_does_not_matter_under_b(pairs, data):
    shuffled = data.draw(st.permutations(pairs))
    assert task_id(_url(["m", "f"], pairs), filtered_query_params=["none"]) == task_id(
        _url(["m", "f"], shuffled), filtered_query_params=["none"]
    )


@settings(max_examples=200)
@given(
    url=st.one_of(
        st.text(max_size=60),
        st.builds(lambda p, q: f"https://h.example/{p}?{q}", st.text(max_size=20), st.text(max_size=30)),
    ),
    tag=st.one_of(st.none(), st.text(max_size=8)),
    piece=st.one_of(st.none(), st.integers(0, 2**40)),
    canon=st.sampled_from(["A", "B"]),
)
def test_id_is_64_lowercase_hex(url, tag, piece, canon):
    try:
        got = task_id(url, tag=tag, piece_length=piece, canonicalization=canon)
    except ConfigError:
        return  # dfdaemon rejects unparsable URLs too
    assert HEX64.fullmatch(got)
