"""dfrepo.values: sizes (binary vs decimal bare prefixes), booleans and ETags read from text."""

from __future__ import annotations

import pytest

from dfrepo.dragonfly.taskid import parse_byte_size
from dfrepo.values import FALSE_WORDS, TRUE_WORDS, normalize_etag, parse_bool, parse_size

KiB, MiB, GiB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "binary", "decimal"),
    [
        ("0", 0, 0),
        ("4096", 4096, 4096),
        ("4096b", 4096, 4096),
        ("64k", 64 * KiB, 64_000),  # a bare prefix: the only spelling where the two differ
        ("64m", 64 * MiB, 64_000_000),
        ("20G", 20 * GiB, 20_000_000_000),
        ("2t", 2 * 1024**4, 2 * 1000**4),
        ("1p", 1024**5, 1000**5),
        ("1e", 1024**6, 1000**6),
        ("8MiB", 8 * MiB, 8 * MiB),  # KiB/MiB/...: powers of 1024 either way
        ("4mi", 4 * MiB, 4 * MiB),
        ("1.5KiB", 1536, 1536),
        ("20GB", 20_000_000_000, 20_000_000_000),  # KB/MB/...: powers of 1000 either way
        ("1.5 MB", 1_500_000, 1_500_000),
        (" 4 mib ", 4 * MiB, 4 * MiB),
    ],
)
def test_parse_size_units(text: str, binary: int, decimal: int) -> None:
    assert parse_size(text) == binary
    assert parse_size(text, bare="binary") == binary
    assert parse_size(text, bare="decimal") == decimal


def test_parse_size_ints_pass_through() -> None:
    assert parse_size(1048576) == 1048576 and parse_size(0, bare="decimal") == 0
    with pytest.raises(ValueError):
        parse_size(-1)
    with pytest.raises(ValueError):
        parse_size(True)  # type: ignore[arg-type]  # a bool is not a size, even though it is an int


@pytest.mark.parametrize("text", ["", "lots", "-1", "4 bananas", "1z", "MiB", "1..5k", "0x10"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
    with pytest.raises(ValueError):
        parse_size(text, bare="decimal")


def test_dfdaemon_byte_size_is_decimal_and_none_when_unparsable() -> None:
    assert parse_byte_size("4m") == 4_000_000 and parse_byte_size("4mib") == 4 * MiB
    assert parse_byte_size("4 bananas") is None and parse_byte_size("") is None


def test_parse_bool() -> None:
    for word in TRUE_WORDS:
        assert parse_bool(word) is True and parse_bool(f" {word.upper()} ") is True
    for word in FALSE_WORDS:
        assert parse_bool(word) is False and parse_bool(word.title()) is False
    with pytest.raises(ValueError):
        parse_bool("maybe")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('"abc"', "abc"), ('W/"abc"', "abc"), ('w/"abc"', "abc"), (' "abc" ', "abc"), ("abc", "abc"),
     ('""', None), ("", None), (None, None)],
)
def test_normalize_etag(raw: str | None, expected: str | None) -> None:
    assert normalize_etag(raw) == expected
