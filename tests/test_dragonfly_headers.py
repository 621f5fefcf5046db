"""Request headers (both filter dialects, tag/version, merge), error mapping (engine.exchange)."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3 import HTTPHeaderDict

from dfrepo.dragonfly import (
    AZURE_SAS_QUERY_PARAMS,
    DEFAULT_FILTERED_QUERY_PARAMS,
    DragonflyConfig,
    is_azure_sas_url,
    request_headers,
    task_id,
    task_id_for_request,
    version_tag,
)
from dfrepo.engine.exchange import status_error
from dfrepo.errors import ConfigError, HTTPStatusError

S3_BARE = "https://models.s3.us-east-1.amazonaws.com/llama/1/model.safetensors"
S3 = (
    S3_BARE + "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZX%2Btoken&X-Amz-Signature=0123abcd"
)
GCS_BARE = "https://storage.googleapis.com/models/llama/1/model.safetensors"
GCS = (
    GCS_BARE + "?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    "&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20260101%2Fauto%2Fstorage%2Fgoog4_request"
    "&X-Goog-Date=20260101T000000Z&X-Goog-Expires=3600&X-Goog-SignedHeaders=host&X-Goog-Signature=a1b2c3"
)
AZ_BARE = "https://acct.blob.core.windows.net/models/llama/1/model.safetensors"
AZ = (
    AZ_BARE + "?sv=2025-01-05&st=2026-01-01T00%3A00%3A00Z&se=2026-01-02T00%3A00%3A00Z&sr=b&sp=r"
    "&skoid=oid&sktid=tid&skt=2026-01-01T00%3A00%3A00Z&ske=2026-01-02T00%3A00%3A00Z&sks=b&skv=2025-01-05"
    "&spr=https&sig=AbC%2Bd%2Fe%3D"
)
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/models/m.onnx?sv=2025-01-05&sr=b&sp=r&se=2026&sig=x%3D"

DEFAULT_RUST = ",".join(dict.fromkeys(DEFAULT_FILTERED_QUERY_PARAMS))
DEFAULT_GO = "&".join(dict.fromkeys(DEFAULT_FILTERED_QUERY_PARAMS))
AZURE_RUST = DEFAULT_RUST + "," + ",".join(AZURE_SAS_QUERY_PARAMS)
AZURE_GO = DEFAULT_GO + "&" + "&".join(AZURE_SAS_QUERY_PARAMS)


@pytest.mark.parametrize(
    ("url", "rust", "go"),
    [(S3, DEFAULT_RUST, DEFAULT_GO), (GCS, DEFAULT_RUST, DEFAULT_GO), (AZ, AZURE_RUST, AZURE_GO),
     (AZURITE, AZURE_RUST, AZURE_GO)],
    ids=["s3", "gcs", "azure", "azurite"],
)  # fmt: skip
def test_default_header_set_both_dialects(url, rust, go):
    headers = request_headers(DragonflyConfig(proxy="http://127.0.0.1:4001"), url)
    assert headers == {
        "X-Dragonfly-Use-P2P": "true",
        "X-Dragonfly-Filtered-Query-Params": rust,
        "X-Dragonfly-Filter": go,
    }
    for value in headers.values():
        assert "0123abcd" not in value and "a1b2c3" not in value and "AbC" not in value  # no secret copied


@pytest.mark.parametrize(("signed", "bare"), [(S3, S3_BARE), (GCS, GCS_BARE), (AZ, AZ_BARE), (AZURITE, None)])
@pytest.mark.parametrize("canon", ["A", "B"])
def test_signature_params_never_change_the_task_id(signed, bare, canon):
    cfg = DragonflyConfig()
    bare = bare or signed.split("?")[0]
    got = task_id_for_request(signed, request_headers(cfg, signed), canonicalization=canon)
    assert got == task_id_for_request(bare, request_headers(cfg, signed), canonicalization=canon)
    assert got == task_id(bare, canonicalization=canon)


@settings(max_examples=100)
@given(
    which=st.sampled_from(["s3", "gcs", "azure"]),
    values=st.lists(st.text(max_size=20), min_size=3, max_size=3),
    canon=st.sampled_from(["A", "B"]),
)
def test_any_signature_values_give_the_same_id(which, values, canon):
    sig, date, cred = (quote(v, safe="") for v in values)
    url = {
        "s3": f"{S3_BARE}?X-Amz-Signature={sig}&X-Amz-Date={date}&X-Amz-Credential={cred}&versionId=3",
        "gcs": f"{GCS_BARE}?X-Goog-Signature={sig}&X-Goog-Date={date}&generation=17&X-Goog-Credential={cred}",
        "azure": f"{AZ_BARE}?sig={sig}&se={date}&skoid={cred}&sv=2025-01-05&versionid=2026-01-01",
    }[which]
    cfg = DragonflyConfig()
    reference = {
        "s3": f"{S3_BARE}?versionId=3",
        "gcs": f"{GCS_BARE}?generation=17",
        "azure": f"{AZ_BARE}?versionid=2026-01-01",
    }[which]
    assert task_id_for_request(url, request_headers(cfg, url), canonicalization=canon) == task_id_for_request(
        reference, request_headers(cfg, url), canonicalization=canon
    )


def test_azure_keys_only_for_azure_urls():
    assert is_azure_sas_url(AZ) and is_azure_sas_url(AZURITE)
    assert is_azure_sas_url("https://acct.dfs.core.usgovcloudapi.net/c/f")
    assert not is_azure_sas_url(S3) and not is_azure_sas_url("https://example.com/f?sv=1")
    # a non-Azure server's "sp"/"st" parameters stay part of the identity
    url = "https://files.example.com/model.bin?st=7&sp=2"
    assert task_id_for_request(url, request_headers(DragonflyConfig(), url)) != task_id("https://files.example.com/model.bin")


def test_user_filter_is_added_to_the_defaults():
    cfg = DragonflyConfig(filter=("token", "X-Amz-Signature"))
    headers = request_headers(cfg, S3)
    names = headers["X-Dragonfly-Filtered-Query-Params"].split(",")
    assert names[: len(set(DEFAULT_FILTERED_QUERY_PARAMS))] == list(dict.fromkeys(DEFAULT_FILTERED_QUERY_PARAMS))
    assert names[-1] == "token" and names.count("X-Amz-Signature") == 1
    assert headers["X-Dragonfly-Filter"].split("&") == names
    url = S3_BARE + "?token=abc"
    assert task_id_for_request(url, request_headers(cfg, url)) == task_id(S3_BARE)


def test_dialect_selection_and_no_p2p():
    h = request_headers(DragonflyConfig(filter_dialects=("rust",), use_p2p=False), S3)
    assert set(h) == {"X-Dragonfly-Filtered-Query-Params"}
    h = request_headers(DragonflyConfig(filter_dialects=("go",)), S3)
    assert set(h) == {"X-Dragonfly-Use-P2P", "X-Dragonfly-Filter"}
    assert request_headers(DragonflyConfig(filter_dialects=(), use_p2p=False), S3) == {}


def test_optional_headers():
    cfg = DragonflyConfig(tag="team", application="triton", priority=3, piece_length=8 * 1024 * 1024)
    h = request_headers(cfg, S3)
    assert h["X-Dragonfly-Tag"] == "team"
    assert h["X-Dragonfly-Application"] == "triton"
    assert h["X-Dragonfly-Priority"] == "3"
    assert h["X-Dragonfly-Piece-Length"] == "8388608"
    assert task_id_for_request(S3, h) == task_id(S3_BARE, tag="team", application="triton", piece_length=8388608)


@pytest.mark.parametrize(
    ("tag", "version", "expected"),
    [(None, '"9b2cf535f27731c974343645a3985328"', "9b2cf535f27731c974343645a3985328"),
     ("team", '"abc"', "team@abc"), ("team", None, "team"), (None, 'W/"weak"', "weak"),
     (None, "1712345678901234", "1712345678901234"), (None, None, None), ("", "", None)],
)  # fmt: skip
def test_version_tag(tag, version, expected):
    assert version_tag(tag, version) == expected


def test_changed_version_changes_the_task_id():
    cfg = DragonflyConfig(tag="team")
    first = task_id_for_request(S3, request_headers(cfg, S3, version='"etag-1"'))
    second = task_id_for_request(S3, request_headers(cfg, S3, version='"etag-2"'))
    same = task_id_for_request(S3, request_headers(cfg, S3, version='"etag-1"'))
    assert first != second and first == same
    assert first == task_id(S3_BARE, tag="team@etag-1")
    # switched off: the version is not sent, the ID stays put
    off = DragonflyConfig(tag="team", version_in_task_id=False)
    assert request_headers(off, S3, version="v1")["X-Dragonfly-Tag"] == "team"
    assert "X-Dragonfly-Tag" not in request_headers(DragonflyConfig(version_in_task_id=False), S3, version="v1")


def test_version_with_control_characters_is_refused():
    with pytest.raises(ConfigError):
        request_headers(DragonflyConfig(), S3, version="abc\r\nX-Evil: 1")


def test_user_headers_merged_last_case_insensitively():
    cfg = DragonflyConfig(headers={"x-dragonfly-filtered-query-params": "X-Amz-Signature", "X-Custom": "1"})
    h = request_headers(cfg, S3)
    assert h["x-dragonfly-filtered-query-params"] == "X-Amz-Signature"
    assert "X-Dragonfly-Filtered-Query-Params" not in h
    assert h["X-Custom"] == "1" and h["X-Dragonfly-Filter"] == DEFAULT_GO
    assert not any(k.lower() == "accept-encoding" for k in h)


def test_tag_header_in_config_is_hoisted_so_the_version_still_applies():
    cfg = DragonflyConfig(headers={"X-Dragonfly-Tag": "team"})
    assert cfg.tag == "team" and not cfg.headers
    assert request_headers(cfg, S3, version="v2")["X-Dragonfly-Tag"] == "team@v2"


# --------------------------------------------------------------------------- error mapping


def error_for(status: int, headers: Mapping[str, str], url: str) -> HTTPStatusError:
    """The engine's error for a proxied answer with *status* and *headers*."""
    return status_error(SimpleNamespace(status=status, headers=HTTPHeaderDict(headers)), url, None)  # type: ignore[arg-type]  # a stand-in for the urllib3 response


@pytest.mark.parametrize(
    ("status", "etype", "retryable"),
    [(403, "backend", False), (404, "backend", False), (503, "backend", True), (500, "backend", True),
     (429, "proxy", True), (401, "proxy", False), (403, "proxy", False), (400, "proxy", False),
     (500, "dfdaemon", True), (422, "dfdaemon", True), (507, "dfdaemon", True),
     (408, None, True), (404, None, False), (502, None, True)],
)  # fmt: skip
def test_classify_response(status, etype, retryable):
    headers = {"x-dragonfly-error-type": etype.upper()} if etype else {}
    err = error_for(status, headers, S3)
    assert isinstance(err, HTTPStatusError)
    assert err.status == status and err.error_type == etype and err.retryable is retryable
    assert "0123abcd" not in str(err) and "0123abcd" not in repr(err.__reduce__())
    assert err.url == S3_BARE + "?<redacted>"


def test_backend_error_keeps_origin_status_and_azure_code():
    err = error_for(403, {"X-Dragonfly-Error-Type": "backend", "x-ms-error-code": "AuthenticationFailed"}, AZ)
    assert err.status == 403 and "AuthenticationFailed" in str(err) and "origin" in str(err)
    assert "AbC" not in str(err)


def test_classify_accepts_urllib3_header_dict():
    err = error_for(429, HTTPHeaderDict({"X-Dragonfly-Error-Type": "proxy"}), S3)
    assert err.error_type == "proxy" and err.retryable
