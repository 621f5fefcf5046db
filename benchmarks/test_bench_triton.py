"""Scenario 4 — the seed's chart on a real Triton and the REAL Dragonfly: model load time.

A python-backend toy model with a ``1/weights.bin`` payload (smoke 32 MiB; full 0.5 and
2 GiB) in SeaweedFS, repository ``s3://127.0.0.1:PORT/bench/triton`` (through the
recording relay, so weight GETs reaching the store are counted). The Dragonfly cluster is
the real scheduler + seed peer + peers (``real_cluster``); every round uses a fresh
``X-Dragonfly-Tag`` (in ``dragonfly_config.json``) so its tasks are cold on every daemon.

a. Triton's built-in S3 download, no agent.
b. dfrepo agent (``libtritonrepoagent_dragonfly.so``, injected with the load API config
   override) through node A's dfdaemon, cold: the seed peer goes back to the origin.
c. remote-peer hit: through node B's dfdaemon (same tag; A and the seed hold the task).
d. local-peer hit: through node A's dfdaemon again.
e. dfrepo persistent-cache hit (``DFREPO_CACHE_DIR``; a second Triton started with it).

Each case's claim is asserted on every measured run from witnesses outside dfrepo: the
store's request log and the daemons' ``dragonfly_client_download_traffic`` metrics.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import _harness as H
from servers.models import make_toy_model
from servers.upload import upload_tree_s3

pytestmark = [pytest.mark.smoke, pytest.mark.servers, pytest.mark.triton, pytest.mark.dragonfly]

BUCKET = "bench"
PREFIX = "triton"
CASES = {
    "a": "Triton built-in S3",
    "b": "dfrepo agent, cold (seed back to source)",
    "c": "dfrepo agent, remote-peer hit (real dfdaemon)",
    "d": "dfrepo agent, local-peer hit (real dfdaemon)",
    "e": "dfrepo persistent-cache hit",
    "f": "dfrepo agent, local hit, gRPC link (real dfdaemon)",
}


def _model_config(name: str, proxy: str, dragonfly_json: Path, tag: str, socket: str | None = None) -> dict[str, Any]:
    """Load-API config override attaching the agent.  The proxy goes through
    ``$TRITON_DRAGONFLY_CONFIG_PATH`` (rewritten before each load), the way an operator
    configures the C++ agent too; with *socket*, ``transport: grpc`` on that socket."""
    doc: dict[str, Any] = {"proxy": proxy, "tag": tag, "fallback_direct": False}
    if socket:
        doc.update(transport="grpc", socket=socket)
    dragonfly_json.write_text(json.dumps(doc))
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4], "label_filename": "labels.txt"}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "model_repository_agents": {"agents": [{"name": "dragonfly"}]},
    }


def _weight_gets(seaweedfs, name: str) -> int:
    """GETs of the weights at the store, not counting 1-byte ``bytes=0-0`` stat probes."""
    return sum(1 for r in seaweedfs.requests()
               if r.method == "GET" and f"{name}/1/weights.bin" in r.target
               and r.headers.get("range", "").replace(" ", "") != "bytes=0-0")


def _unload(handle, name: str, timeout: float = 60.0) -> None:
    handle.unload(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {m.get("name"): m.get("state") for m in handle.repository_index()}
        if states.get(name) in (None, "UNAVAILABLE"):
            return
        time.sleep(0.1)


def _install_agent(tmp: Path) -> Path:
    from dfrepo.triton.install import install_agent

    repoagents = tmp / "repoagents"
    install_agent(repoagents, "dragonfly", sys_path=[str(H.ROOT / "src")])
    return repoagents


def _delta(after: dict[str, int], before: dict[str, int], kind: str) -> int:
    return after.get(kind, 0) - before.get(kind, 0)


def test_triton_load(seaweedfs, triton_server, real_cluster, bench_scale, tmpfs_dir, disk_dir) -> None:
    sc = bench_scale
    sizes = sc["triton_sizes"]
    root = tmpfs_dir / "triton-models"
    models = {}
    for size in sizes:
        name = f"bench_{size // H.MiB}m"
        make_toy_model(root, name, payload_bytes=size, verify_payload=False)
        models[name] = size
    upload_tree_s3(seaweedfs, BUCKET, PREFIX, root)
    shutil.rmtree(root, ignore_errors=True)
    repo_url = seaweedfs.s3_url(BUCKET, PREFIX)
    repoagents = _install_agent(tmpfs_dir / "triton-agent")
    # The caches live on the disk that holds Triton's /tmp/folderXXXXXX dirs, as they should in
    # a deployment: then a hit is a hard link, not a copy across file systems.
    cache_cold = disk_dir / "cache-cold"   # T1: wiped before every agent load (never a hit)
    cache_warm = disk_dir / "cache-warm"   # T2: kept, so (e) is a hit after warm-up
    work = tmpfs_dir / "work-triton"
    work.mkdir(parents=True, exist_ok=True)
    dragonfly_json = work / "dragonfly_config.json"
    dragonfly_json.write_text("{}")

    times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CASES} for n in models}
    evidence: dict[str, dict[str, list[Any]]] = {n: {c: [] for c in CASES} for n in models}

    env = dict(seaweedfs.triton_env(), DFREPO_CACHE_DIR=str(cache_cold),
               TRITON_DRAGONFLY_CONFIG_PATH=str(dragonfly_json))
    t1 = triton_server(repo_url, repoagent_dir=str(repoagents), env=env)
    node_a, node_b = real_cluster.peers[0], real_cluster.peers[1]
    daemons = {"seed": real_cluster.seed, "a": node_a, "b": node_b}
    t2 = triton_server(repo_url, repoagent_dir=str(repoagents),
                       env=dict(seaweedfs.triton_env(), DFREPO_CACHE_DIR=str(cache_warm),
                                TRITON_DRAGONFLY_CONFIG_PATH=str(dragonfly_json)))
    tags: dict[str, str] = {}

    def load(handle, name: str, config: dict | None) -> float:
        t0 = time.perf_counter()
        status, body = handle.load(name, config, timeout=sc["timeout"])
        dt = time.perf_counter() - t0
        if status != 200:
            lines = [ln for ln in handle.log().splitlines()[-40:] if ln.startswith("E") or "rror" in ln]
            raise RuntimeError(f"load {name} -> {status}: {body[:300]} | log: {' / '.join(lines[-3:])[:600]}")
        assert handle.infer_fp32(name, "INPUT0", [1, 2, 3, 4], "OUTPUT0") == [2, 3, 4, 5]
        _unload(handle, name)
        return dt

    def case(c: str, name: str, measured: bool) -> None:
        seaweedfs.clear_log()
        if c == "b":
            tags[name] = f"bench-{uuid.uuid4().hex[:12]}"  # a new task on every daemon
        tag = tags.get(name, "unused")
        if c in "bcdf":
            H.clear_outputs([cache_cold])
        before = {k: d.traffic() for k, d in daemons.items()}
        if c == "a":
            dt = load(t1, name, None)
        elif c in "bd":
            dt = load(t1, name, _model_config(name, node_a.proxy, dragonfly_json, tag))
        elif c == "c":
            dt = load(t1, name, _model_config(name, node_b.proxy, dragonfly_json, tag))
        elif c == "f":
            dt = load(t1, name, _model_config(name, node_a.proxy, dragonfly_json, tag, str(node_a.socket_path)))
        else:
            # A fresh tag: a hit must come from the cache, not from any daemon.
            dt = load(t2, name, _model_config(name, node_a.proxy, dragonfly_json, f"e-{uuid.uuid4().hex}"))
        after = {k: d.traffic() for k, d in daemons.items()}
        gets = _weight_gets(seaweedfs, name)
        size = models[name]
        ev = {"origin_weight_gets": gets,
              **{f"{k}_{kind.lower()}": _delta(after[k], before[k], kind) for k in daemons
                 for kind in ("BACK_TO_SOURCE", "REMOTE_PEER", "LOCAL_PEER")}}
        moved = sum(_delta(after[k], before[k], kind) for k in daemons
                    for kind in ("BACK_TO_SOURCE", "REMOTE_PEER", "LOCAL_PEER"))
        claims = {
            "a": gets >= 1,
            "b": ev["seed_back_to_source"] + ev["a_back_to_source"] >= size,
            "c": ev["b_remote_peer"] >= size and gets == 0,
            "d": ev["a_local_peer"] >= size and gets == 0,
            "e": moved == 0 and gets == 0,
            # The daemon links its content file into the stage: nothing from the origin
            # or another peer (it may count the hit as LOCAL_PEER traffic).
            "f": gets == 0 and sum(ev[f"{k}_back_to_source"] + ev[f"{k}_remote_peer"] for k in daemons) == 0,
        }
        if not measured:
            return  # the warm-up fills caches ((e) is a miss the first time by design)
        assert claims[c], f"({c}) {CASES[c]} on {name}: claim not met, evidence {json.dumps(ev)}"
        times[name][c].append(dt)
        evidence[name][c].append(ev)

    def one(label: str, measured: bool) -> H.Run:
        name = label
        real_cluster.forget_all()  # the last round's tasks: bounded disk on every daemon
        for c in CASES:
            idle = H.idle_fraction(0.3)
            case(c, name, measured)
            if measured and times[name][c]:
                evidence[name][c][-1]["idle_before"] = idle
        return H.Run(label, 0.0, 0.0, 0.0, 0.0, 0, 0)

    H.run_rounds(list(models), one, sc, label="triton")
    t2.stop()
    t1.stop()
    H.clear_outputs([cache_cold, cache_warm])

    rows = []
    chart_paths = []
    result_rows: dict[str, dict[str, Any]] = {}
    for name, size in models.items():
        base = statistics.median(times[name]["a"]) if times[name]["a"] else None
        for c, label in CASES.items():
            ts = times[name][c]
            med = statistics.median(ts) if ts else None
            row = {"case": c, "label": label, "size": size, "runs": len(ts),
                   "median_s": med, "min_s": min(ts) if ts else None,
                   "speedup_vs_a": (base / med) if base and med else None, "evidence": evidence[name][c]}
            result_rows[f"{name}/{c}"] = row
            rows.append([H.human(size), f"({c}) {label}", med, row["min_s"], row["speedup_vs_a"], len(ts)])
        labels = [f"({c}) {CASES[c]}" for c in CASES]
        vals = [result_rows[f"{name}/{c}"]["median_s"] for c in CASES]
        ann = [(f"{v:.2f}s\n{base / v:.1f}×" if v and base else f"{v:.2f}s") for v in vals]
        p = H.bar_chart(H.results_dir() / f"triton_{name}.png",
                        f"Triton model load, {H.human(size)} weights (explicit load API, median)",
                        labels, vals, "load time (s)", annotate=ann, highlight=[1, 2, 3, 4, 5])
        if p:
            chart_paths.append(str(p))
    md = H.markdown_table(["model", "case", "load median s", "min s", "speedup vs (a)", "runs"], rows)
    notes = [(f"repository {repo_url} (SeaweedFS via the recording relay); python-backend toy model, payload "
             "not hashed at load; each load followed by an inference and an unload"),
             ("real Dragonfly (scheduler + seed + peers, versions in scripts/dragonfly-versions.env); claims "
             "asserted per run from the store log and the daemons' traffic metrics: (a) weights GET at the "
             "store, (b) the seed/node A back to source, (c) node B REMOTE_PEER and no store GET, (d) node A "
             "LOCAL_PEER and no store GET, (e) no daemon traffic and no store GET, (f) node A over gRPC: the "
             "daemon hard-links its file, no store GET and no back-to-source or remote-peer bytes")]
    H.write_result("triton", {"models": models, "rows": result_rows, "notes": notes, "charts": chart_paths,
                              "cluster": real_cluster.describe()}, md)
    for name in models:
        for c in CASES:
            assert times[name][c], f"({c}) on {name}: no measured run"
