"""One benchmark client run, in a fresh process (so ``ru_maxrss`` is this client's alone).

Usage: ``python benchmarks/_client.py SPEC.json`` where the spec names the ``client``,
its inputs and a ``result`` path.  The result file gets::

    {"seconds": transfer wall time, "cpu_s": user+sys of this process (all threads)
     during the transfer, "rss_base_kb": VmHWM after imports and setup,
     "rss_peak_kb": VmHWM at the end (the client's peak RSS), "extra": {...}}

Every client ends with the same durability step as dfrepo: ``fsync`` of each output file
(and its directory) inside the timed region, so disk destinations compare fairly.
The parent takes the whole-process CPU from ``wait4``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1 << 20


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _hwm_kb() -> int:
    """Peak RSS of this process image (``VmHWM``). ``ru_maxrss`` is not used: Linux
    carries it across ``execve`` from the forking parent (the pytest process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _fsync(paths: list[str]) -> None:
    dirs = set()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dirs.add(os.path.dirname(p) or ".")
    for d in dirs:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _items(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``files``: [{"url"|"key", "dest", "size"}]; a single-object spec is one item."""
    if "files" in spec:
        return spec["files"]
    return [{k: spec.get(k) for k in ("url", "key", "dest", "size")}]


# --------------------------------------------------------------------------- clients
# Each returns a prepared callable (imports and client setup happen before timing).


def prep_dfrepo(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from dfrepo.engine import Downloader, DownloadRequest
    from dfrepo.engine.settings import TransferConfig

    cfg = TransferConfig(**spec.get("config", {}))
    dragonfly = None
    if spec.get("proxy"):
        from dfrepo.dragonfly.config import DragonflyConfig

        dragonfly = DragonflyConfig(proxy=spec["proxy"], fallback_direct=False, **spec.get("dragonfly", {}))
    reqs = [DownloadRequest(url=i["url"], dest=Path(i["dest"]), size=i.get("size")) for i in _items(spec)]

    def run() -> dict[str, Any]:
        with Downloader(cfg, dragonfly=dragonfly, implementation=spec.get("implementation")) as dl:
            results = dl.download_many(reqs)
            impl = dl.implementation
        return {"implementation": impl, "requests": sum(r.requests for r in results),
                "retries": sum(r.retries for r in results), "via": sorted({r.via for r in results}),
                "source": sorted({r.source for r in results})}

    return run


def prep_urllib3(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Single-stream GET per file, ``preload_content=False``, 1 MiB reads streamed to the file."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=1)
    items = _items(spec)

    def run() -> dict[str, Any]:
        for it in items:
            r = pool.request("GET", it["url"], preload_content=False)
            if r.status != 200:
                raise RuntimeError(f"status {r.status}")
            with open(it["dest"], "wb") as f:
                f.writelines(r.stream(MiB))
            r.release_conn()
        _fsync([i["dest"] for i in items])
        return {}

    return run


def prep_hf_transfer(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    import hf_transfer

    items = _items(spec)
    max_files = int(spec.get("max_files", 16))
    chunk = int(spec.get("chunk_size", 10 * MiB))

    def run() -> dict[str, Any]:
        for it in items:
            hf_transfer.download(it["url"], it["dest"], max_files=max_files, chunk_size=chunk)
        _fsync([i["dest"] for i in items])
        return {"max_files": max_files, "chunk_size": chunk}

    return run


def prep_boto3(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """boto3 classic s3transfer (forced: no CRT), default TransferConfig otherwise."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    s3 = spec["s3"]
    client = boto3.session.Session().client(
        "s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"], region_name=s3["region"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, proxies={},
                      max_pool_connections=16))
    tcfg = TransferConfig(preferred_transfer_client="classic")
    items = _items(spec)

    def run() -> dict[str, Any]:
        if len(items) == 1:
            client.download_file(s3["bucket"], items[0]["key"], items[0]["dest"], Config=tcfg)
        else:
            from s3transfer.manager import TransferManager

            with TransferManager(client, tcfg) as tm:
                futs = [tm.download(s3["bucket"], it["key"], it["dest"]) for it in items]
                for f in futs:
                    f.result()
        _fsync([i["dest"] for i in items])
        return {"transfer_client": "classic"}

    return run


def prep_awscrt(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """awscrt ``S3Client`` (TLS off, 8 MiB parts, 10 Gbps target), ``recv_filepath``."""
    from awscrt.auth import AwsCredentialsProvider
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
    from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType

    s3 = spec["s3"]
    elg = EventLoopGroup()
    bootstrap = ClientBootstrap(elg, DefaultHostResolver(elg))
    creds = AwsCredentialsProvider.new_static(s3["access_key"], s3["secret_key"])
    client = S3Client(bootstrap=bootstrap, region=s3["region"], credential_provider=creds,
                      tls_mode=S3RequestTlsMode.DISABLED, part_size=int(spec.get("part_size", 8 * MiB)),
                      throughput_target_gbps=float(spec.get("gbps", 10.0)))
    host = s3["endpoint"].split("://", 1)[1]
    items = _items(spec)

    def run() -> dict[str, Any]:
        reqs = []
        for it in items:
            req = HttpRequest("GET", f"/{s3['bucket']}/{it['key']}", HttpHeaders([("Host", host)]))
            reqs.append(client.make_request(type=S3RequestType.GET_OBJECT, request=req, recv_filepath=it["dest"]))
        for r in reqs:
            r.finished_future.result(600)
        _fsync([i["dest"] for i in items])
        return {}

    return run


def prep_stdlib(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """The floor any parallel downloader should beat: the standard library only —
    ``threads`` threads with one ``http.client`` connection each, 8 MiB range GETs (one GET
    per file for files that are smaller), ``os.pwrite`` at the final offset."""
    import http.client
    import queue
    import threading
    import urllib.parse

    threads, part = int(spec.get("threads", 8)), int(spec.get("part_size", 8 * MiB))
    items = _items(spec)

    def run() -> dict[str, Any]:
        work: queue.SimpleQueue[tuple[dict[str, Any], int, int] | None] = queue.SimpleQueue()
        fds = {it["dest"]: os.open(it["dest"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for it in items}
        for it in items:
            for start in range(0, max(it["size"], 1), part):
                work.put((it, start, min(start + part, it["size"]) - 1))
        errors: list[BaseException] = []

        def worker() -> None:
            conns: dict[str, http.client.HTTPConnection] = {}
            while (job := work.get()) is not None:
                it, start, end = job
                u = urllib.parse.urlsplit(it["url"])
                conn = conns.get(u.netloc) or conns.setdefault(u.netloc, http.client.HTTPConnection(u.netloc))
                whole = start == 0 and end == it["size"] - 1
                conn.request("GET", u.path + (f"?{u.query}" if u.query else ""),
                             headers={} if whole else {"Range": f"bytes={start}-{end}"})
                r = conn.getresponse()
                if r.status not in (200, 206):
                    errors.append(RuntimeError(f"status {r.status}"))
                    return
                pos = start
                while chunk := r.read(MiB):
                    os.pwrite(fds[it["dest"]], chunk, pos)
                    pos += len(chunk)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for _ in pool:
            work.put(None)
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        for fd in fds.values():
            os.close(fd)
        if errors:
            raise errors[0]
        _fsync([i["dest"] for i in items])
        return {"threads": threads, "part_size": part}

    return run


def prep_kernel_copy(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """No network at all: ``sendfile`` from the source file (on tmpfs) into the destination,
    page cache to page cache in the kernel (``copy_file_range`` would refuse another mount).
    What putting the bytes into a file on that destination costs by itself — the floor
    under every downloader's CPU per byte there."""
    src, items = spec["source"], _items(spec)

    def run() -> dict[str, Any]:
        for it in items:
            fin = os.open(src, os.O_RDONLY)
            fout = os.open(it["dest"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                size, pos = os.fstat(fin).st_size, 0
                while pos < size:
                    n = os.sendfile(fout, fin, pos, min(size - pos, 64 * MiB))
                    if n <= 0:
                        raise RuntimeError("sendfile stopped early")
                    pos += n
            finally:
                os.close(fin)
                os.close(fout)
        _fsync([i["dest"] for i in items])
        return {}

    return run


CLIENTS = {"dfrepo": prep_dfrepo, "kernel-copy": prep_kernel_copy, "stdlib": prep_stdlib, "urllib3": prep_urllib3,
           "hf_transfer": prep_hf_transfer,
           "boto3": prep_boto3, "awscrt": prep_awscrt}


def _start_perf(spec: dict[str, Any]) -> Any:
    """With ``perf_record`` in the spec: ``perf record`` this process from now on (after the
    imports and setup, so the profile is the transfer's), written to that path."""
    if not spec.get("perf_record"):
        return None
    import subprocess

    out = spec["perf_record"]
    proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-o", out,
                             "-p", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5.0
    while not os.path.exists(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)  # attached to every thread before the transfer starts
    return proc


def _stop_perf(proc: Any) -> None:
    if proc is not None:
        import signal

        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    run = CLIENTS[spec["client"]](spec)
    perf = _start_perf(spec)
    rss_base = _hwm_kb()
    c0, t0 = _cpu(), time.perf_counter()
    extra = run()
    t1, c1 = time.perf_counter(), _cpu()
    _stop_perf(perf)
    out = {"seconds": t1 - t0, "cpu_s": c1 - c0, "rss_base_kb": rss_base, "rss_peak_kb": _hwm_kb(), "extra": extra}
    tmp = spec["result"] + ".tmp"
    Path(tmp).write_text(json.dumps(out))
    os.replace(tmp, spec["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
