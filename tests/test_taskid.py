"""Task IDs against every upstream vector (dragonfly-proxy.md §2.2, §2.4, §2.5) + properties."""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taskid_vectors as vectors
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


@pytest.mark.parametrize("canon", ["A", "B"])
@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "revision", "expected"), vectors.CLIENT)
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


@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "expected", "also_a"), vectors.TABLE_II)
def test_table_ii_canonicalization_b(url, piece, tag, app, filtered, expected, also_a):
    got = task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered)
    assert got == expected
    if also_a:  # rows where the old generation gives the same string
        assert task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered,
                       canonicalization="A") == expected  # fmt: skip


@pytest.mark.parametrize(("url", "piece", "tag", "app", "filtered", "canonical", "expected"), vectors.TABLE_III)
def test_table_iii_canonicalization_a(url, piece, tag, app, filtered, canonical, expected):
    assert canonical_url(url, filtered, canonicalization="A") == canonical
    got = task_id(url, piece_length=piece, tag=tag, application=app, filtered_query_params=filtered,
                  canonicalization="A")  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(("url", "filtered", "expected"), vectors.CANONICAL_B)
def test_canonical_strings_b(url, filtered, expected):
    assert canonical_url(url, filtered) == expected


def test_content_vector_ignores_everything_else():
    got = task_id("https://x.example/whatever?a=1", tag="t", piece_length=4194304, content=vectors.CONTENT)
    assert got == vectors.CONTENT_ID
    headers = {"X-Dragonfly-Content-For-Calculating-Task-ID": vectors.CONTENT, "X-Dragonfly-Tag": "t"}
    assert task_id_for_request("https://x.example/y", headers) == vectors.CONTENT_ID


def test_v1_0_0_vector_is_url_tag_app_piece_standard():
    url, piece, tag, app, filtered, _, expected = vectors.CLIENT_V1_0_0
    assert hashlib.sha256(b"https://example.comfoobar1024STANDARD").hexdigest() == expected
    for canon in ("A", "B"):
        got = task_id(url, tag=tag, application=app, piece_length=piece,
                      filtered_query_params=filtered, canonicalization=canon)  # fmt: skip
        assert got == expected


@pytest.mark.parametrize("canon", ["A", "B"])
def test_worked_example_presigned_s3(canon):
    signed = (
        vectors.WORKED_EXAMPLE_BARE
        + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=deadbeef"
    )
    assert task_id(signed, canonicalization=canon) == vectors.WORKED_EXAMPLE_ID
    assert task_id(vectors.WORKED_EXAMPLE_BARE, canonicalization=canon) == vectors.WORKED_EXAMPLE_ID
    # what dfdaemon computes from dfrepo's headers, too
    assert task_id_for_request(signed, {}, canonicalization=canon) == vectors.WORKED_EXAMPLE_ID


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
