"""The gRPC transport's pure parts: settings, error mapping, scrubbing (no daemon needed;
the real-daemon behaviour is in test_real_dragonfly_grpc.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dfrepo import errors
from dfrepo.dragonfly import DragonflyConfig, load_dragonfly_config
from dfrepo.dragonfly.daemon_grpc import DaemonGrpc, GrpcUnavailable, _LinkFailed, _origin_error, _scrub


class _FakeCode:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeRpcError(Exception):
    def __init__(self, code: str, details: str, trailers: tuple[tuple[str, Any], ...] = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> _FakeCode:
        return _FakeCode(self._code)

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailers


URL = "http://127.0.0.1:9/b/k?X-Amz-Signature=topsecret123&X-Amz-Date=1"


@pytest.fixture
def daemon(tmp_path: Path) -> DaemonGrpc:
    d = DaemonGrpc(str(tmp_path / "no.sock"), DragonflyConfig())
    yield d
    d.close()


def test_config_keys_and_validation(tmp_path: Path) -> None:
    cfg = tmp_path / "dragonfly_config.json"
    cfg.write_text('{"transport": "GRPC", "socket": "/run/df/d.sock", "peer_ranges": true}')
    got = load_dragonfly_config(cfg)
    assert (got.transport, got.socket, got.peer_ranges) == ("grpc", "/run/df/d.sock", True)
    assert got.enabled, "gRPC without a proxy still goes through Dragonfly"
    assert load_dragonfly_config(cfg, overrides={"transport": "auto", "socket": "/x.sock"}).transport == "auto"
    for bad in ({"transport": "quic"}, {"socket": "relative.sock"}, {"socket": "/" + "s" * 120}):
        with pytest.raises(errors.ConfigError):
            load_dragonfly_config(cfg, overrides=bad)
    assert DragonflyConfig().transport == "proxy" and not DragonflyConfig().enabled


def test_health_of_a_missing_socket(daemon: DaemonGrpc) -> None:
    assert "no socket" in (daemon.health() or "")


@pytest.mark.parametrize("details,trailers,status", [
    ("backend error: 403 Forbidden", (), 403),
    ("backend error", (("grpc-status-details-bin", b'{"message":"x","header":{},"status_code":404}'),), 404),
    ('download failed {"status_code": 500, "header": {}}', (), 500),
])
def test_internal_origin_errors_become_http_status_errors(daemon: DaemonGrpc, details: str, trailers: Any,
                                                         status: int) -> None:
    err = daemon._error(_FakeRpcError("INTERNAL", details, trailers), URL, True)
    assert isinstance(err, errors.HTTPStatusError) and err.status == status and err.error_type == "backend"
    assert "topsecret123" not in str(err) and "topsecret123" not in repr(err.__dict__)


@pytest.mark.parametrize("code,details", [("UNAVAILABLE", "Socket closed"), ("RESOURCE_EXHAUSTED", "busy"),
                                          ("INTERNAL", "Stream removed (RST_STREAM)")])
def test_transient_failures_are_retryable(daemon: DaemonGrpc, code: str, details: str) -> None:
    assert isinstance(daemon._error(_FakeRpcError(code, details), URL, False), GrpcUnavailable)


def test_link_refusal_asks_for_a_copy_and_messages_are_scrubbed(daemon: DaemonGrpc) -> None:
    assert isinstance(daemon._error(_FakeRpcError("UNKNOWN", "hard link failed: os error 18"), URL, True),
                      _LinkFailed)
    err = daemon._error(_FakeRpcError("INVALID_ARGUMENT", f"bad url {URL}"), URL, False)
    assert isinstance(err, errors.TransferError) and "topsecret123" not in str(err)
    assert _scrub(f"x {URL} y") == "x http://127.0.0.1:9/b/k?<redacted> y"
    assert _origin_error("no status here") is None
