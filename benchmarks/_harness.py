"""Benchmark harness: scale, machine facts, idle gating, per-client subprocess runs,
verification, aggregation, JSON/markdown/PNG output.

Method (performance.md §8-§9): all clients of a scenario run side by side in one
session, interleaved round-robin, one warm-up round, then >= 3 measured rounds; the
median and min are reported.  Each client runs in a fresh subprocess, so its peak RSS
is its own; CPU is user+sys of that process (all threads)
during the transfer, measured inside the child with ``RUSAGE_SELF``, plus the whole
process (interpreter start and imports included) from ``wait4``.  Peak RSS is the
child's ``VmHWM`` (``ru_maxrss`` would carry the forking pytest's RSS across exec).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
GiB = 1 << 30

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
def results_dir() -> Path:
    """Where results go: ``$DFREPO_BENCH_RESULTS``, else ``benchmarks/results/`` for the full
    scale and ``benchmarks/results/smoke/`` (git-ignored) for the smoke scale, so a test-suite
    run never overwrites the published full-size numbers."""
    if os.environ.get("DFREPO_BENCH_RESULTS"):
        out = Path(os.environ["DFREPO_BENCH_RESULTS"])
    else:
        base = BENCH_DIR / "results"
        out = base if scale_name() == "full" else base / scale_name()
    out.mkdir(parents=True, exist_ok=True)
    return out
CLIENT_SCRIPT = BENCH_DIR / "_client.py"
PYTHON = sys.executable

# --------------------------------------------------------------------------- scale

SCALES: dict[str, dict[str, Any]] = {
    "smoke": {
        "large": 64 * MiB, "many_count": 100, "many_size": 256 * 1024,
        "fanout_size": 64 * MiB, "fanout_nodes": [1, 2, 4, 8],
        "scaling_sizes": [16 * MiB, 64 * MiB, 256 * MiB],
        "triton_sizes": [32 * MiB],
        "rounds": 3, "idle_wait": 2.0, "idle_retries": 1, "full_verify": True, "timeout": 120.0,
    },
    "full": {
        "large": 2 * GiB, "many_count": 1000, "many_size": 1 * MiB,
        "fanout_size": 1 * GiB, "fanout_nodes": [1, 2, 4, 8],
        "scaling_sizes": [64 * MiB, 256 * MiB, 1 * GiB, 2 * GiB, 4 * GiB],
        "triton_sizes": [512 * MiB, 2 * GiB],
        "rounds": 5, "idle_wait": 60.0, "idle_retries": 3, "full_verify": False, "timeout": 900.0,
    },
}


def scale_name() -> str:
    name = os.environ.get("DFREPO_BENCH_SCALE", "smoke").strip().lower() or "smoke"
    if name not in SCALES:
        raise ValueError(f"DFREPO_BENCH_SCALE must be one of {sorted(SCALES)}, not {name!r}")
    return name


def scale() -> dict[str, Any]:
    s = dict(SCALES[scale_name()])
    if os.environ.get("DFREPO_BENCH_ROUNDS"):
        s["rounds"] = max(1, int(os.environ["DFREPO_BENCH_ROUNDS"]))
    if os.environ.get("DFREPO_BENCH_IDLE_WAIT"):  # seconds to wait for an idle machine per round
        s["idle_wait"] = max(0.0, float(os.environ["DFREPO_BENCH_IDLE_WAIT"]))
        s["idle_retries"] = 0 if s["idle_wait"] == 0 else s["idle_retries"]
    return s


def human(n: float) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= div:
            v = n / div
            return f"{v:g} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for mod in ("dfrepo", "urllib3", "boto3", "awscrt", "hf_transfer"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001 - informational only
            versions[mod] = None
    nginx = shutil.which("nginx")
    return {
        "cpu_model": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / GiB, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "scale": scale_name(), "versions": versions, "nginx": nginx,
        "loadavg": os.getloadavg(),
    }


def _cpu_times() -> tuple[int, int]:
    fields_ = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields_[3] + (fields_[4] if len(fields_) > 4 else 0)
    return idle, sum(fields_[:8])


def idle_fraction(interval: float = 1.0) -> float:
    i0, t0 = _cpu_times()
    time.sleep(interval)
    i1, t1 = _cpu_times()
    return (i1 - i0) / max(1, t1 - t0)


IDLE_MIN = 0.70


def wait_idle(max_wait: float, interval: float = 1.0) -> float:
    """Sample idle CPU; wait (bounded) until >= IDLE_MIN. Returns the last sample."""
    deadline = time.monotonic() + max_wait
    idle = idle_fraction(interval)
    while idle < IDLE_MIN and time.monotonic() < deadline:
        idle = idle_fraction(interval)
    return idle


# --------------------------------------------------------------------------- data


def write_source(path: Path, size: int, seed: int = 1) -> str:
    """A file of *size* bytes: 16 MiB random block, each block stamped with its index
    (so a range written at the wrong offset changes the hash).  Returns the md5."""
    import random

    rnd = random.Random(seed)
    block = bytearray(rnd.randbytes(16 * MiB))
    md5 = hashlib.md5()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        off, idx = 0, 0
        while off < size:
            n = min(len(block), size - off)
            struct.pack_into("<QQ", block, 0, idx, seed)
            view = memoryview(block)[:n]
            f.write(view)
            md5.update(view)
            off += n
            idx += 1
    return md5.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 * MiB)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def same_bytes(a: Path, b: Path, *, full: bool, samples: int = 64, sample_size: int = MiB) -> bool:
    """Size equal and content equal (all bytes, or *samples* spread chunks incl. both ends)."""
    size = a.stat().st_size
    if b.stat().st_size != size:
        return False
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        if full:
            while True:
                x, y = fa.read(8 * MiB), fb.read(8 * MiB)
                if x != y:
                    return False
                if not x:
                    return True
        offsets = {0, max(0, size - sample_size)}
        if size > sample_size:
            offsets |= {(size - sample_size) * i // samples for i in range(samples)}
        for off in sorted(offsets):
            if os.pread(fa.fileno(), sample_size, off) != os.pread(fb.fileno(), sample_size, off):
                return False
    return True


def scratch_dir(kind: str) -> Path:
    """``tmpfs`` -> /dev/shm, ``disk`` -> /var/tmp (a real filesystem)."""
    base = "/dev/shm" if kind == "tmpfs" and os.path.isdir("/dev/shm") else "/var/tmp"
    return Path(tempfile.mkdtemp(prefix=f"dfrepo-bench-{kind}-", dir=base))


def fs_type(path: Path) -> str:
    try:
        best, fstype = "", "?"
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, fstype = mnt, parts[2]
        return fstype
    except OSError:
        return "?"


# --------------------------------------------------------------------------- running clients


@dataclass
class Run:
    client: str
    seconds: float
    cpu_s: float
    proc_cpu_s: float
    proc_wall_s: float
    maxrss_kb: int
    rss_base_kb: int
    extra: dict[str, Any] = field(default_factory=dict)
    verified: bool | None = None


class ClientFailed(RuntimeError):
    pass


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_client(name: str, spec: dict[str, Any], workdir: Path, *,
                 wrapper: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], Path, Path, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    fd, spec_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".json", dir=workdir)
    os.close(fd)
    result = Path(spec_path).with_suffix(".result")
    spec = dict(spec, result=str(result))
    Path(spec_path).write_text(json.dumps(spec))
    log = Path(spec_path).with_suffix(".log")
    with open(log, "wb") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*wrapper, PYTHON, str(CLIENT_SCRIPT), spec_path], stdout=lf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env())
    return proc, result, log, t0


def finish_client(name: str, proc: subprocess.Popen[bytes], result: Path, log: Path, t0: float,
                  timeout: float) -> Run:
    """Reap exactly this child with ``wait4`` (its own rusage); kill it after *timeout*."""
    killed = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout):
            killed.set()
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    done = threading.Event()
    threading.Thread(target=watchdog, daemon=True).start()
    _, status, ru = os.wait4(proc.pid, 0)
    done.set()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set() or proc.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        why = "timed out" if killed.is_set() else f"exit {proc.returncode}"
        raise ClientFailed(f"client {name} {why}:\n{tail}")
    data = json.loads(result.read_text())
    return Run(client=name, seconds=data["seconds"], cpu_s=data["cpu_s"],
               proc_cpu_s=ru.ru_utime + ru.ru_stime, proc_wall_s=wall, maxrss_kb=data["rss_peak_kb"],
               rss_base_kb=data["rss_base_kb"], extra=data.get("extra", {}))


def run_client(name: str, spec: dict[str, Any], workdir: Path, timeout: float) -> Run:
    return finish_client(name, *start_client(name, spec, workdir), timeout=timeout)


def clear_outputs(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- rounds


@dataclass
class Round:
    index: int
    idle: float
    noisy: bool
    warmup: bool
    runs: list[Run]


def run_rounds(clients: Sequence[str], one: Any, sc: dict[str, Any], *, label: str = "") -> list[Round]:
    """Warm-up + ``sc['rounds']`` measured rounds; each round runs every client once
    (order rotated per round).  Rounds that start with idle < 70% are re-run up to
    ``idle_retries`` times; if the machine never gets idle the round is kept and flagged.
    ``one(client, measured)`` runs a single client and returns a :class:`Run`."""
    rounds: list[Round] = []
    total = sc["rounds"] + 1
    for i in range(total):
        warm = i == 0
        attempt = 0
        while True:
            idle = wait_idle(sc["idle_wait"], 0.5 if scale_name() == "smoke" else 1.0)
            noisy = idle < IDLE_MIN
            order = list(clients[i % len(clients):]) + list(clients[: i % len(clients)])
            runs = [one(c, not warm) for c in order]
            if warm or not noisy or attempt >= sc["idle_retries"]:
                break
            attempt += 1
            print(f"[{label}] round {i} discarded (idle {idle:.0%} < {IDLE_MIN:.0%}), re-running")
        rounds.append(Round(i, idle, noisy, warm, runs))
    return rounds


def summarize(rounds: Sequence[Round], size_bytes: int, order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Per client: median/min wall, GiB/s (median and best), CPU-s/GiB, peak RSS."""
    measured = [r for r in rounds if not r.warmup]
    names: list[str] = list(order)
    for r in measured:
        for run in r.runs:
            if run.client not in names:
                names.append(run.client)
    out: dict[str, dict[str, Any]] = {}
    gib = size_bytes / GiB
    for name in names:
        runs = [run for r in measured for run in r.runs if run.client == name]
        walls = [x.seconds for x in runs]
        med, best = statistics.median(walls), min(walls)
        out[name] = {
            "runs": len(runs),
            "wall_median_s": med, "wall_min_s": best,
            "gibps_median": gib / med if med else None, "gibps_best": gib / best if best else None,
            "cpu_s_per_gib": statistics.median(x.cpu_s for x in runs) / gib if gib else None,
            "proc_cpu_s_per_gib": statistics.median(x.proc_cpu_s for x in runs) / gib if gib else None,
            "peak_rss_mb": max(x.maxrss_kb for x in runs) / 1024,
            "base_rss_mb": max(x.rss_base_kb for x in runs) / 1024,
            "verified": all(x.verified is not False for x in runs),
            "noisy_rounds": sum(1 for r in measured if r.noisy and any(x.client == name for x in r.runs)),
            "extra": runs[-1].extra,
        }
    return out


def add_ratios(table: dict[str, dict[str, Any]], reference: str) -> None:
    """``speedup_of_ref`` = reference GiB/s / client GiB/s (median): how many times faster
    the reference (dfrepo compiled) is than this client."""
    ref = table.get(reference, {}).get("gibps_median")
    for row in table.values():
        g = row.get("gibps_median")
        row["ref"] = reference
        row["speedup_of_ref"] = (ref / g) if ref and g else None


def rounds_json(rounds: Sequence[Round]) -> list[dict[str, Any]]:
    return [{"index": r.index, "idle": round(r.idle, 3), "noisy": r.noisy, "warmup": r.warmup,
             "runs": [{"client": x.client, "seconds": round(x.seconds, 4), "cpu_s": round(x.cpu_s, 3),
                       "proc_cpu_s": round(x.proc_cpu_s, 3), "proc_wall_s": round(x.proc_wall_s, 3),
                       "maxrss_kb": x.maxrss_kb, "rss_base_kb": x.rss_base_kb, "verified": x.verified}
                      for x in r.runs]} for r in rounds]


# --------------------------------------------------------------------------- output


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(c) for c in row) + " |")
    return "\n".join(lines)


def client_table(table: dict[str, dict[str, Any]]) -> str:
    headers = ["client", "GiB/s median", "GiB/s best", "wall median s", "CPU-s/GiB", "proc CPU-s/GiB",
               "peak RSS MB", "base RSS MB", "ref ÷ client", "verified", "noisy rounds"]
    rows = [[n, r["gibps_median"], r["gibps_best"], r["wall_median_s"], r["cpu_s_per_gib"],
             r["proc_cpu_s_per_gib"], r["peak_rss_mb"], r["base_rss_mb"], r.get("speedup_of_ref"),
             r["verified"], r["noisy_rounds"]] for n, r in table.items()]
    return markdown_table(headers, rows)


def write_result(scenario: str, payload: dict[str, Any], markdown: str) -> Path:
    results_dir().mkdir(parents=True, exist_ok=True)
    doc = {"scenario": scenario, "machine": machine(), **payload, "markdown": markdown}
    path = results_dir() / f"{scenario}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n=== {scenario} ===\n{markdown}\n")
    return path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, title: str, labels: Sequence[str], values: Sequence[float | None], ylabel: str,
              *, annotate: Sequence[str] | None = None, highlight: Sequence[int] = ()) -> Path | None:
    try:
        plt = _plt()
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.2))
    vals = [v or 0.0 for v in values]
    colors = ["#76b900" if i in highlight else "#5b7fa6" for i in range(len(labels))]
    bars = ax.bar(range(len(labels)), vals, color=colors)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if max(vals, default=0) > 0:
        ax.set_ylim(top=max(vals) * 1.2)
    for i, b in enumerate(bars):
        text = annotate[i] if annotate else f"{vals[i]:.2f}"
        ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def line_chart(path: Path, title: str, xs: Sequence[float], series: dict[str, Sequence[float | None]],
               xlabel: str, ylabels: dict[str, str]) -> Path | None:
    """One subplot per series (shared x)."""
    try:
        plt = _plt()
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4))
    if len(series) == 1:
        axes = [axes]
    for ax, (name, ys) in zip(axes, series.items(), strict=True):
        ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabels.get(name, name))
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary() -> Path | None:
    """Collect every ``results/*.json`` into ``SUMMARY.md`` (tables + chart links)."""
    if not results_dir().is_dir():
        return None
    docs = []
    for p in sorted(results_dir().glob("*.json")):
        try:
            docs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if not docs:
        return None
    m = docs[-1]["machine"]
    parts = [
        "# dfrepo benchmark summary", "",
        (f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} by `pytest benchmarks/` "
        f"(scale per scenario below). Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
        f"kernel {m['kernel']}, Python {m['python']}."), "",
        ("Method: clients interleaved round-robin in one session, 1 warm-up + N measured rounds, median and "
        "min; each client in a fresh subprocess (peak RSS = its `VmHWM`); CPU = user+sys of the client "
        "process during the transfer (all threads); idle CPU sampled from /proc/stat before each round, "
        "rounds under 70% idle re-run (bounded) and otherwise flagged *noisy*. `ref ÷ client` = how many "
        "times faster dfrepo compiled (default io_mode) is than that client."), "",
    ]
    for d in docs:
        parts += [f"## {d['scenario']} (scale: {d['machine'].get('scale')}, {d['machine'].get('date')})", ""]
        if d.get("notes"):
            parts += [f"- {n}" for n in d["notes"]] + [""]
        parts += [d.get("markdown", ""), ""]
        for chart in d.get("charts", []):
            parts.append(f"![{Path(chart).stem}]({Path(chart).name})")
        parts.append("")
    out = results_dir() / "SUMMARY.md"
    out.write_text("\n".join(parts))
    return out


def s3_spec(server: Any, bucket: str) -> dict[str, Any]:
    """Connection facts for the S3 clients (SeaweedFS's own port, not the relay)."""
    return {"endpoint": server.direct_endpoint, "access_key": server.access_key,
            "secret_key": server.secret_key, "region": server.region, "bucket": bucket}


def presign(client: Any, bucket: str, key: str, expires: int = 3600) -> str:
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)


def target(label: str, value: float | None, goal: float, *, higher_is_better: bool = True) -> str:
    if value is None:
        return f"{label}: n/a (goal {goal:g})"
    met = value >= goal if higher_is_better else value <= goal
    return f"{label}: {value:.2f} (goal {'≥' if higher_is_better else '≤'} {goal:g}) — {'met' if met else 'NOT met'}"
