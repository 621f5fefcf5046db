"""Scenario 1 — raw transfer (the engine benchmark).

Origin: nginx on 127.0.0.1 (sendfile) serving files that live on tmpfs, and SeaweedFS
S3 (direct port) for the S3-native clients.  Workloads:

* ``raw_large_tmpfs`` / ``raw_large_hugetmpfs`` / ``raw_large_disk``: one object (smoke
  64 MiB, full 2 GiB) to the default tmpfs (4 KiB pages), to a tmpfs with huge pages
  (``huge=within_size``: what the transfer costs once page allocation is not the
  bottleneck), or to a real disk; every client fsyncs the result inside the timing. The
  tmpfs rows carry a kernel profile of dfrepo's run: where its CPU goes.
* ``raw_many``: N small files (smoke 100 x 256 KiB, full 1000 x 1 MiB) to tmpfs;
  dfrepo through ``Downloader.download_many``.

Clients (plus ``kernel-copy``, which is not a downloader: ``sendfile`` from the source
on tmpfs, the cost of filling the destination with no network at all): dfrepo
compiled (default io_mode: splice; recv as its own row), dfrepo's pure-Python twin,
single-stream urllib3, the stdlib floor (8 threads of http.client + pwrite), hf_transfer
(against nginx); boto3 classic s3transfer, awscrt ``S3Client`` and dfrepo on a presigned URL
(against SeaweedFS, apples to apples).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import _harness as H

pytestmark = [pytest.mark.smoke, pytest.mark.servers]

DFREPO = {"client": "dfrepo", "implementation": "cython", "config": {}}  # default io_mode (auto: splice)
REF_HTTP = "dfrepo"
REF_S3 = "dfrepo@s3"


@pytest.fixture(scope="module")
def large_source(nginx_origin, bench_bucket, tmpfs_dir, bench_scale):
    """The large object on tmpfs, linked into nginx's root and uploaded to SeaweedFS."""
    size = bench_scale["large"]
    src = tmpfs_dir / "src" / "large.bin"
    md5 = H.write_source(src, size, seed=11)
    link = nginx_origin.root / "large.bin"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(src)
    client, bucket = bench_bucket
    client.upload_file(str(src), bucket, "raw/large.bin")
    yield {"path": src, "size": size, "md5": md5, "url": nginx_origin.url("large.bin"), "key": "raw/large.bin"}
    link.unlink()
    src.unlink()


@pytest.fixture(scope="module")
def many_source(nginx_origin, bench_bucket, tmpfs_dir, bench_scale):
    count, size = bench_scale["many_count"], bench_scale["many_size"]
    d = tmpfs_dir / "src" / "many"
    d.mkdir(parents=True, exist_ok=True)
    client, bucket = bench_bucket
    files = []
    for i in range(count):
        p = d / f"f{i:04d}.bin"
        H.write_source(p, size, seed=1000 + i)
        client.upload_file(str(p), bucket, f"raw/many/{p.name}")
        files.append(p)
    link = nginx_origin.root / "many"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(d)
    yield {"dir": d, "files": files, "count": count, "size": size, "total": count * size}
    link.unlink()
    shutil.rmtree(d, ignore_errors=True)


def _large_clients(src: dict[str, Any], s3: dict[str, Any], presigned: str) -> dict[str, dict[str, Any]]:
    return {
        "dfrepo": {**DFREPO, "url": src["url"], "size": src["size"]},
        "dfrepo-recv": {**DFREPO, "config": {"io_mode": "recv"}, "url": src["url"], "size": src["size"]},
        "dfrepo-twin": {"client": "dfrepo", "implementation": "python", "url": src["url"], "size": src["size"]},
        "urllib3-1stream": {"client": "urllib3", "url": src["url"]},
        "stdlib-8threads": {"client": "stdlib", "threads": 8, "url": src["url"], "size": src["size"]},
        "hf_transfer": {"client": "hf_transfer", "url": src["url"], "max_files": 16, "chunk_size": 10 * H.MiB},
        # Not a downloader: the destination's own floor (the bytes copied in the kernel, no network).
        "kernel-copy (no network)": {"client": "kernel-copy", "source": str(src["path"])},
        "dfrepo@s3": {**DFREPO, "url": presigned, "size": src["size"]},
        "boto3-classic@s3": {"client": "boto3", "s3": s3, "key": src["key"]},
        "awscrt@s3": {"client": "awscrt", "s3": s3, "key": src["key"]},
    }


def _group_ratios(table: dict[str, dict[str, Any]]) -> None:
    http = {k: v for k, v in table.items() if not k.endswith("@s3")}
    s3 = {k: v for k, v in table.items() if k.endswith("@s3")}
    H.add_ratios(http, REF_HTTP)
    H.add_ratios(s3, REF_S3)


def _targets(table: dict[str, dict[str, Any]]) -> list[str]:
    def ratio(name: str) -> float | None:
        return table.get(name, {}).get("speedup_of_ref")

    ref = table.get(REF_HTTP, {})
    floor = table.get("kernel-copy (no network)", {})
    return [
        H.target("compiled ÷ stdlib floor (8 threads)", ratio("stdlib-8threads"), 1.3),
        H.target("compiled ÷ twin", ratio("dfrepo-twin"), 1.3),
        H.target("compiled ÷ hf_transfer", ratio("hf_transfer"), 1.5),
        H.target("compiled@s3 ÷ awscrt", ratio("awscrt@s3"), 1.5),
        H.target("compiled@s3 ÷ boto3 classic", ratio("boto3-classic@s3"), 2.5),
        H.target("compiled CPU-s/GiB", ref.get("cpu_s_per_gib"), 0.5, higher_is_better=False),
        f"the destination's own floor (kernel copy from tmpfs, no network): {floor.get('cpu_s_per_gib') or 0:.2f} "
        f"CPU-s/GiB at {floor.get('gibps_median') or 0:.2f} GiB/s — no client that writes the bytes there costs less",
        H.target("compiled peak RSS MB", ref.get("peak_rss_mb"), 64, higher_is_better=False),
    ]


def _strace_profile(spec: dict[str, Any], workdir: Path, dest: Path, timeout: float) -> str | None:
    """``strace -c -f`` syscall summary of one compiled-client run (None without strace)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = workdir / "strace.txt"
    try:
        proc, result, log, t0 = H.start_client("strace", {**spec, "dest": str(dest)}, workdir,
                                               wrapper=[strace, "-f", "-c", "-o", str(out)])
        H.finish_client("strace", proc, result, log, t0, timeout)
    except (H.ClientFailed, OSError) as exc:
        return f"strace run failed: {str(exc)[:200]}"
    finally:
        H.clear_outputs([dest])
    lines = out.read_text().splitlines() if out.exists() else []
    # header (2 lines) + the 8 most expensive syscalls + total
    keep = lines[:10] + [ln for ln in lines[-2:] if "total" in ln]
    return "\n".join(keep)


#: Kernel functions whose inclusive share of the samples answers "where does the CPU go".
CPU_PARTS = {
    "page-cache allocation": ("shmem_alloc_and_add_folio", "filemap_add_folio"),
    "copy into the page cache": ("copy_folio_from_iter_atomic",),
    "zeroing partly written huge pages": ("zero_user_segments.constprop.0", "folio_zero_user"),
    "socket receive": ("tcp_splice_read", "tcp_recvmsg"),
    "inode lock contention": ("rwsem_down_write_slowpath",),
}


def cpu_profile(spec: dict[str, Any], workdir: Path, dest: Path, timeout: float) -> dict[str, float] | None:
    """``perf record`` of one dfrepo transfer (the client attaches it after its imports and
    setup): the share of the CPU samples spent in each of :data:`CPU_PARTS` and in user
    space (None without a working ``perf``)."""
    import subprocess

    perf = shutil.which("perf")
    if perf is None:
        return None
    data = workdir / "perf.data"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc, result, log, t0 = H.start_client("perf", {**spec, "dest": str(dest), "perf_record": str(data)},
                                               workdir)
        H.finish_client("perf", proc, result, log, t0, timeout)
        def report(*args: str) -> str:
            return subprocess.run([perf, "report", "-i", str(data), "--stdio", "-g", "none", *args],
                                  capture_output=True, text=True, timeout=120).stdout

        by_symbol = report("--children", "--sort", "sym", "--percent-limit", "0.5")
        by_object = report("--no-children", "--sort", "dso")
    except (H.ClientFailed, OSError, subprocess.SubprocessError):
        return None
    finally:
        H.clear_outputs([dest])
        data.unlink(missing_ok=True)
    inclusive: dict[str, float] = {}
    for line in by_symbol.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[2] in ("[k]", "[.]"):
            inclusive[parts[3]] = float(parts[0].rstrip("%")) / 100
    user = sum(float(parts[0].rstrip("%")) / 100 for parts in map(str.split, by_object.splitlines())
               if len(parts) == 2 and parts[0].endswith("%") and "kernel" not in parts[1])
    if not inclusive:
        return None
    out = {name: max((inclusive.get(f, 0.0) for f in funcs), default=0.0) for name, funcs in CPU_PARTS.items()}
    out["user space (Python, the core)"] = user
    return out


def _large(kind: str, dest_root: Path, large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir) -> None:
    sc = bench_scale
    client, bucket = bench_bucket
    s3 = H.s3_spec(seaweedfs, bucket)
    presigned = H.presign(client, bucket, large_source["key"])
    specs = _large_clients(large_source, s3, presigned)
    work = tmpfs_dir / f"work-{kind}"
    first_verified: set[str] = set()

    def one(name: str, measured: bool) -> H.Run:
        dest = dest_root / name / "large.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        H.clear_outputs([dest])
        run = H.run_client(name, {**specs[name], "dest": str(dest)}, work, sc["timeout"])
        full = sc["full_verify"] or name not in first_verified
        run.verified = H.same_bytes(dest, large_source["path"], full=full)
        first_verified.add(name)
        H.clear_outputs([dest])
        assert run.verified, f"{name}: output differs from the source"
        return run

    rounds = H.run_rounds(list(specs), one, sc, label=f"raw_large_{kind}")
    table = H.summarize(rounds, large_source["size"], list(specs))
    _group_ratios(table)
    notes = [(f"object {H.human(large_source['size'])}, destination {kind} ({dest_root}, "
             f"{H.fs_type(dest_root)}), origin nginx (file on tmpfs) / SeaweedFS direct port; "
             "S3 rows compare against dfrepo@s3 (presigned SeaweedFS URL)")]
    notes += _targets(table)
    profile = cpu = None
    if kind == "tmpfs":
        profile = _strace_profile({**specs[REF_HTTP]}, work, dest_root / "strace" / "large.bin", sc["timeout"])
        if profile:
            notes.append("strace -c -f of dfrepo (one run, slowed by tracing): see `profile`")
    if kind in ("tmpfs", "hugetmpfs"):
        cpu = cpu_profile({**specs[REF_HTTP]}, work, dest_root / "perf" / "large.bin", sc["timeout"])
        if cpu:
            notes.append("where dfrepo's CPU goes (perf, share of the process's samples): "
                         + ", ".join(f"{k} {v:.0%}" for k, v in cpu.items()))
    md = H.client_table(table)
    if profile:
        md += "\n\n```\n" + profile + "\n```"
    chart = H.bar_chart(H.results_dir() / f"raw_large_{kind}.png",
                        f"Raw transfer: {H.human(large_source['size'])} → {kind} (GiB/s, median)",
                        list(table), [r["gibps_median"] for r in table.values()], "GiB/s",
                        highlight=[i for i, n in enumerate(table) if n in (REF_HTTP, REF_S3)])
    H.write_result(f"raw_large_{kind}", {"workload": {"size": large_source["size"], "dest": kind},
                                         "clients": table, "rounds": H.rounds_json(rounds), "notes": notes,
                                         "profile": profile, "cpu_profile": cpu,
                                         "charts": [str(chart)] if chart else []}, md)
    assert all(r["verified"] for r in table.values())


def test_raw_large_tmpfs(large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir) -> None:
    dest = tmpfs_dir / "dest-large"
    _large("tmpfs", dest, large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir)


def test_raw_large_hugetmpfs(large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir, hugetmpfs_dir) -> None:
    _large("hugetmpfs", hugetmpfs_dir / "dest-large", large_source, seaweedfs, bench_bucket, bench_scale,
           tmpfs_dir)


def test_raw_large_disk(large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir, disk_dir) -> None:
    dest = disk_dir / "dest-large"
    _large("disk", dest, large_source, seaweedfs, bench_bucket, bench_scale, tmpfs_dir)


def test_raw_many(many_source, nginx_origin, seaweedfs, bench_bucket, bench_scale, tmpfs_dir) -> None:
    sc = bench_scale
    client, bucket = bench_bucket
    s3 = H.s3_spec(seaweedfs, bucket)
    names = [p.name for p in many_source["files"]]
    size = many_source["size"]

    def files(dest: Path, *, url: str | None = None, s3_keys: bool = False, presigned: bool = False):
        out = []
        for n in names:
            item: dict[str, Any] = {"dest": str(dest / n), "size": size}
            if s3_keys:
                item["key"] = f"raw/many/{n}"
            elif presigned:
                item["url"] = H.presign(client, bucket, f"raw/many/{n}")
            else:
                item["url"] = nginx_origin.url(f"many/{n}")
            out.append(item)
        return out

    specs = {
        "dfrepo": {**DFREPO},
        "dfrepo-twin": {"client": "dfrepo", "implementation": "python"},
        "urllib3-1stream": {"client": "urllib3"},
        "stdlib-8threads": {"client": "stdlib", "threads": 8},
        "hf_transfer": {"client": "hf_transfer", "max_files": 16, "chunk_size": 10 * H.MiB},
        "dfrepo@s3": {**DFREPO, "_presigned": True},
        "boto3-classic@s3": {"client": "boto3", "s3": s3, "_keys": True},
        "awscrt@s3": {"client": "awscrt", "s3": s3, "_keys": True},
    }
    dest_root = tmpfs_dir / "dest-many"
    work = tmpfs_dir / "work-many"
    # presigning 1000 URLs is not free: do it once, outside the timing
    presigned_items = files(Path("/"), presigned=True)

    def one(name: str, measured: bool) -> H.Run:
        dest = dest_root / name
        H.clear_outputs([dest])
        dest.mkdir(parents=True)
        spec = {k: v for k, v in specs[name].items() if not k.startswith("_")}
        if specs[name].get("_keys"):
            spec["files"] = files(dest, s3_keys=True)
        elif specs[name].get("_presigned"):
            spec["files"] = [{**it, "dest": str(dest / Path(it["dest"]).name)} for it in presigned_items]
        else:
            spec["files"] = files(dest)
        run = H.run_client(name, spec, work, sc["timeout"])
        step = 1 if sc["full_verify"] else 10
        ok = all((dest / n).stat().st_size == size for n in names)
        ok = ok and all(H.same_bytes(dest / names[i], many_source["dir"] / names[i], full=True)
                        for i in range(0, len(names), step))
        run.verified = ok
        H.clear_outputs([dest])
        assert ok, f"{name}: output differs from the source"
        return run

    rounds = H.run_rounds(list(specs), one, sc, label="raw_many")
    table = H.summarize(rounds, many_source["total"], list(specs))
    _group_ratios(table)
    for row in table.values():
        row["files_per_s"] = many_source["count"] / row["wall_median_s"]
    notes = [(f"{many_source['count']} files × {H.human(size)} → tmpfs; dfrepo via Downloader.download_many; "
             "urllib3 and hf_transfer fetch the files one after the other, boto3 via one TransferManager, "
             "awscrt submits all requests at once")]
    md = H.client_table(table) + "\n\n" + H.markdown_table(
        ["client", "files/s (median)"], [[n, r["files_per_s"]] for n, r in table.items()])
    chart = H.bar_chart(H.results_dir() / "raw_many.png",
                        f"{many_source['count']} × {H.human(size)} → tmpfs (files/s, median)",
                        list(table), [r["files_per_s"] for r in table.values()], "files/s",
                        annotate=[f"{r['files_per_s']:.0f}" for r in table.values()],
                        highlight=[i for i, n in enumerate(table) if n in (REF_HTTP, REF_S3)])
    H.write_result("raw_many", {"workload": {"count": many_source["count"], "size": size, "dest": "tmpfs"},
                                "clients": table, "rounds": H.rounds_json(rounds), "notes": notes,
                                "charts": [str(chart)] if chart else []}, md)
