"""nginx as a static-file origin (sendfile, keep-alive, byte ranges) with an access log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .procs import LOOPBACK, ManagedProcess, clean_env, free_port, http_status, which

__all__ = ["AccessEntry", "NginxOrigin", "nginx_binary", "start_nginx"]

_LOG_SEP = "\t"


@dataclass(frozen=True)
class AccessEntry:
    """One access-log line."""

    request: str  # "GET /path HTTP/1.1"
    status: int
    body_bytes: int
    range: str  # the Range request header, "" if none


@dataclass
class NginxOrigin:
    """A running nginx serving ``root`` at ``base_url``."""

    process: ManagedProcess
    port: int
    root: Path
    access_log_path: Path
    host: str = LOOPBACK

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, rel: str) -> str:
        return f"{self.base_url}/{rel.lstrip('/')}"

    def access_entries(self) -> list[AccessEntry]:
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split(_LOG_SEP)
            if len(parts) != 4:
                continue
            request, status, sent, rng = parts
            out.append(AccessEntry(request, int(status), int(sent), "" if rng == "-" else rng))
        return out

    def access_log(self) -> list[str]:
        """Request lines (``"GET /x HTTP/1.1"``) in the order nginx logged them."""
        return [e.request for e in self.access_entries()]

    def clear_log(self) -> None:
        """Empty the access log (nginx keeps appending to the same open file)."""
        with open(self.access_log_path, "r+b") as f:
            f.truncate(0)

    def stop(self) -> None:
        self.process.stop()


def nginx_binary() -> Path | None:
    return which("nginx")


def start_nginx(workdir: Path, root: Path | None = None, *, timeout: float = 15.0,
                upstream: str | None = None, limit_rate: str | None = None) -> NginxOrigin:
    """Start ``nginx -c <conf> -p <workdir>`` in the foreground on a free loopback port.

    :param upstream: ``host:port`` to reverse-proxy to (unbuffered, keep-alive, the client's
        ``Host`` forwarded so S3 signatures still match) instead of serving *root*.
    :param limit_rate: nginx ``limit_rate`` for every response, per connection (e.g. ``"40m"``
        = 40 MB/s): an origin that serves each connection at a fixed rate, as object stores do.
    """
    exe = nginx_binary()
    if exe is None:
        raise FileNotFoundError("nginx not found (apt package nginx-light); run scripts/bootstrap.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    root = root or workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (workdir / sub).mkdir(exist_ok=True)
    port = free_port()
    access = workdir / "access.log"
    access.touch()
    # Running as root, nginx would drop workers to "nobody", which cannot read pytest's 0700 dirs.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    rate = f"limit_rate {limit_rate};" if limit_rate else ""
    upstream_block = proxy = ""
    if upstream:
        # Buffered in memory only (no temp files): limit_rate does not apply to unbuffered proxying.
        upstream_block = f"upstream origin {{ server {upstream}; keepalive 128; }}"
        proxy = ("location / { proxy_pass http://origin; proxy_http_version 1.1; "
                 "proxy_set_header Connection \"\"; proxy_set_header Host $http_host; "
                 "proxy_buffering on; proxy_max_temp_file_size 0; proxy_buffers 16 64k; "
                 "proxy_request_buffering off; client_max_body_size 0; }")
    conf.write_text(
        f"""{user}
daemon off;
master_process on;
worker_processes 2;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    log_format dfrepo '$request{_LOG_SEP}$status{_LOG_SEP}$body_bytes_sent{_LOG_SEP}$http_range';
    access_log {access} dfrepo;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    max_ranges 64;
    etag on;
    client_body_temp_path {workdir / "client_body"};
    proxy_temp_path {workdir / "proxy"};
    fastcgi_temp_path {workdir / "fastcgi"};
    uwsgi_temp_path {workdir / "uwsgi"};
    scgi_temp_path {workdir / "scgi"};
    {upstream_block}
    server {{
        listen {LOOPBACK}:{port};
        server_name localhost;
        root {root};
        autoindex off;
        {rate}
        {proxy}
    }}
}}
"""
    )
    proc = ManagedProcess(
        "nginx",
        [exe, "-e", workdir / "error.log", "-c", conf, "-p", workdir],
        log_path=workdir / "nginx.out",
        env=clean_env(),
        cwd=workdir,
    )
    proc.start(lambda: http_status(f"http://{LOOPBACK}:{port}/") is not None, timeout=timeout)
    # The readiness probe itself is not part of any test's traffic.
    with open(access, "r+b") as f:
        f.truncate(0)
    return NginxOrigin(proc, port, root, access)
