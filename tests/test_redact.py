"""dfrepo.redact: the one home of URL redaction (errors, logs, cache sidecars, agent replies)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfrepo.redact import REDACTED_QUERY, redact_inline, redact_url, redact_urls

SIGNED = "https://u:pw@bucket.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA#frag"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SIGNED, "https://bucket.s3.amazonaws.com/k?<redacted>"),
        ("http://user:pw@h:81/p", "http://h:81/p"),
        ("http://[::1]:9/p?sig=x", "http://[::1]:9/p?<redacted>"),
        ("s3://http://127.0.0.1:9000/b/k?x=1", "s3://http://127.0.0.1:9000/b/k?<redacted>"),
        ("/local/path?odd", "/local/path?<redacted>"),
        ("", ""),
        (None, ""),
    ],
)
def test_redact_url(url: str | None, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SIGNED, "https://bucket.s3.amazonaws.com/k?<redacted>"),
        # nested Triton form: kept as written, not folded like redact_url would
        ("s3://http://u:p@127.0.0.1:9000/b/k?sig=1", "s3://http://127.0.0.1:9000/b/k?<redacted>"),
        ("s3://http://127.0.0.1:9000/bucket/m", "s3://http://127.0.0.1:9000/bucket/m"),
        ("gs://b/k#frag", "gs://b/k"),
    ],
)
def test_redact_inline(text: str, expected: str) -> None:
    assert redact_inline(text) == expected


def test_redact_urls_in_free_text() -> None:
    text = f"GET {SIGNED} failed; 'http://127.0.0.1:9/b/k?sig=topsecret123' and s3://b/k stay"
    assert redact_urls(text) == (
        "GET https://bucket.s3.amazonaws.com/k?<redacted> failed; "
        "'http://127.0.0.1:9/b/k?<redacted>' and s3://b/k stay"
    )
    # already redacted text is left as it is
    once = redact_urls(text)
    assert redact_urls(once) == once


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "s3", "S3", "gs"]),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/.-_~@:", max_size=20),
    secret=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ%=&", min_size=12, max_size=30),
)
def test_no_query_survives_any_helper(scheme: str, path: str, secret: str) -> None:
    url = f"{scheme}://host/{path}?{secret}"
    for out in (redact_url(url), redact_inline(url), redact_urls(f"x {url} y")):
        assert secret not in out
    assert redact_inline(url).endswith(REDACTED_QUERY)
