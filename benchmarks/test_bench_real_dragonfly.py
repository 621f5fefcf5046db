"""Scenario 5 — the real Dragonfly: request modes and fan-out on scheduler + seed + 4 peers.

All on loopback: SeaweedFS behind the recording relay (origin requests counted there),
the real scheduler, a seed peer and four peers (``tests/servers/dragonfly.py``). Every
round uses a fresh ``X-Dragonfly-Tag`` so every task is cold on every daemon (the daemons
cannot be told to forget a task; a new tag is a new task ID).

5a. **Ranges or one GET per file through the peer.** For a single large object and for a
    many-file model, each request mode — one GET per file (``peer_ranges`` off) and
    piece-aligned ranges of several sizes — is run cold through node A (the seed goes back
    to the origin) and then through node B (remote-peer hit). Reported: seconds and GiB/s
    per node, origin requests per node (relay log), peers the scheduler registered
    (``dragonfly_scheduler_register_peer_total``), requests dfrepo sent.
5b. **Fan-out.** N = 1, 2, 4 nodes pull the same object at once, each dfrepo client a
    subprocess talking to its own peer. Reported: origin bytes ÷ object size (sum of every
    daemon's ``BACK_TO_SOURCE`` traffic) and the time until the last node has its file.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import _harness as H
from dfrepo.dragonfly import DragonflyConfig
from dfrepo.engine.settings import TransferConfig
from dfrepo.pull import pull

pytestmark = [pytest.mark.smoke, pytest.mark.servers, pytest.mark.dragonfly]

BUCKET = "bench-df"
# Concurrent cold range GETs of one task on one dfdaemon 1.5.10 can stall until the client's
# read timeout (measured: every smoke run has at least one): range modes run with a 30 s read
# timeout so a stall costs 30 s and a retry, not 120 s — and the stalls are counted.
MODES: dict[str, dict[str, Any]] = {
    "one GET per file": {"peer_ranges": False},
    "one GET per file, 16 in flight": {"peer_ranges": False, "concurrency": 16},
    "ranges 16 MiB": {"peer_ranges": True, "range_size": 16 * H.MiB, "read_timeout": 30.0},
    "ranges 64 MiB": {"peer_ranges": True, "range_size": 64 * H.MiB, "read_timeout": 30.0},
}


def _sizes(sc: dict[str, Any]) -> dict[str, Any]:
    if H.scale_name() == "full":
        return {"single": 2 * H.GiB, "many": (32, 16 * H.MiB), "fanout": 1 * H.GiB}
    return {"single": 96 * H.MiB, "many": (12, 6 * H.MiB), "fanout": 64 * H.MiB}


def _all_traffic(cluster: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in [cluster.seed, *cluster.peers]:
        for kind, n in node.traffic().items():
            total[kind] = total.get(kind, 0) + n
    return total


def _registered(cluster: Any) -> float:
    return cluster.scheduler_metric("dragonfly_scheduler_register_peer_total")


def _origin_requests(seaweedfs: Any, prefix: str) -> tuple[int, int]:
    """(content GETs, 1-byte stat GETs) the store saw under *prefix*."""
    content = stat = 0
    for r in seaweedfs.requests():
        if r.method == "GET" and r.target.split("?", 1)[0].startswith(prefix):
            if r.headers.get("range", "").replace(" ", "") == "bytes=0-0":
                stat += 1
            else:
                content += 1
    return content, stat


def _bucket(seaweedfs: Any) -> Any:
    client = seaweedfs.client()
    try:
        client.head_bucket(Bucket=BUCKET)
    except Exception:  # noqa: BLE001
        client.create_bucket(Bucket=BUCKET)
    return client


def _run_modes(model: str, cluster: Any, seaweedfs: Any, tmpfs_dir: Path, files: dict[str, int],
               modes: dict[str, dict[str, Any]], rounds: int) -> None:
    """Upload *files* ({name: size}) under ``modes/<model>``, run every mode *rounds* times
    (fresh tag each round: node A cold, then node B), write ``real_modes_<model>``."""
    from servers.upload import upload_tree_s3

    _bucket(seaweedfs)
    src = tmpfs_dir / f"src-modes-{model}"
    for i, (name, size) in enumerate(files.items()):
        H.write_source(src / name, size, seed=100 + i)
    upload_tree_s3(seaweedfs, BUCKET, f"modes/{model}", src)
    H.clear_outputs([src])
    env = dict(seaweedfs.triton_env(), TRITON_DRAGONFLY_CONFIG_PATH=str(tmpfs_dir / "none.json"))
    prefix, total = f"modes/{model}", sum(files.values())
    rows: dict[str, dict[str, Any]] = {}
    table = []
    for mode, knobs in modes.items():
        samples: dict[str, list[float]] = {"a_s": [], "b_s": [], "registered": [], "origin_a": [],
                                           "origin_b": [], "stat_b": [], "requests": [], "btos": [],
                                           "retries_a": []}
        for _ in range(1 if knobs["peer_ranges"] else rounds):  # range modes stall: one round
            tag = f"bench-{uuid.uuid4().hex[:12]}"
            transfer = TransferConfig(fsync=False, range_size=knobs.get("range_size", 32 * H.MiB),
                                      concurrency=knobs.get("concurrency", TransferConfig().concurrency),
                                      read_timeout=knobs.get("read_timeout", TransferConfig().read_timeout))
            for node_name, node in (("a", cluster.peers[0]), ("b", cluster.peers[1])):
                df = DragonflyConfig(proxy=node.proxy, fallback_direct=False, tag=tag,
                                     peer_ranges=knobs["peer_ranges"])
                dest = tmpfs_dir / f"out-{model}-{node_name}"
                H.clear_outputs([dest])
                seaweedfs.clear_log()
                reg0, t0 = _registered(cluster), _all_traffic(cluster)
                started = time.perf_counter()
                res = pull(seaweedfs.s3_url(BUCKET, prefix), dest, env=env, dragonfly=df, transfer=transfer)
                seconds = time.perf_counter() - started
                reg1, t1 = _registered(cluster), _all_traffic(cluster)
                content, stat = _origin_requests(seaweedfs, f"/{BUCKET}/{prefix}/")
                assert res.bytes == total and res.via == "proxy"
                assert all(r.task_id == r.predicted_task_id for r in res.results)
                samples[f"{node_name}_s"].append(seconds)
                samples[f"origin_{node_name}"].append(content)
                if node_name == "a":
                    samples["registered"].append(reg1 - reg0)
                    samples["requests"].append(res.requests)
                    samples["retries_a"].append(res.retries)
                    samples["btos"].append(t1.get("BACK_TO_SOURCE", 0) - t0.get("BACK_TO_SOURCE", 0))
                else:
                    samples["stat_b"].append(stat)
                    # The claim of P2P: node B takes no content from the store.
                    assert content == 0, f"{model}/{mode}: node B fetched content from the origin"
                H.clear_outputs([dest])
            cluster.forget_all()  # every daemon drops this round's tasks: bounded disk
        med = {k: statistics.median(v) for k, v in samples.items() if v}
        row = {"model": model, "mode": mode, "bytes": total, "files": len(files), **med,
               "a_gibps": total / med["a_s"] / H.GiB, "b_gibps": total / med["b_s"] / H.GiB,
               "rounds": len(samples["a_s"]), "samples": samples}
        rows[mode] = row
        table.append([f"{len(files)} × {H.human(max(files.values()))}", mode, med["a_s"], row["a_gibps"],
                      med["b_s"], row["b_gibps"], int(med["requests"]), int(med["registered"]),
                      int(med["origin_a"]), int(med["stat_b"]), med["btos"] / total, int(sum(samples["retries_a"]))])
    md = H.markdown_table(
        ["model", "mode", "node A cold s", "A GiB/s", "node B remote s", "B GiB/s", "dfrepo requests",
         "peers registered (A)", "origin GETs (A)", "origin stat GETs (B)", "back-to-source ÷ size",
         "stalled ranges (A, all rounds)"], table)
    p = H.bar_chart(H.results_dir() / f"real_modes_{model}.png",
                    f"Real dfdaemon, {len(files)} file(s), {H.human(total)}: node A cold / node B remote",
                    [f"{m}\nA cold" for m in modes] + [f"{m}\nB remote" for m in modes],
                    [rows[m]["a_s"] for m in modes] + [rows[m]["b_s"] for m in modes], "seconds (median)",
                    annotate=[f"{rows[m]['a_s']:.1f}s\n{int(rows[m]['registered'])} peers" for m in modes]
                    + [f"{rows[m]['b_s']:.1f}s" for m in modes])
    H.write_result(f"real_modes_{model}", {"rows": rows, "charts": [str(p)] if p else [],
                                          "cluster": cluster.describe()}, md)


def _rounds(sc: dict[str, Any]) -> int:
    return min(sc["rounds"], 2) if H.scale_name() == "full" else 1


def test_request_modes_single(real_cluster, seaweedfs, bench_scale, tmpfs_dir) -> None:  # type: ignore[no-untyped-def]
    """5a. One large object: one GET vs piece-aligned ranges of 16, 64 and 256 MiB."""
    names = ("one GET per file", "ranges 64 MiB") if H.scale_name() == "full" \
        else ("one GET per file", "ranges 16 MiB")
    modes = {m: MODES[m] for m in names}
    _run_modes("single", real_cluster, seaweedfs, tmpfs_dir, {"model.bin": _sizes(bench_scale)["single"]},
               modes, _rounds(bench_scale))


def test_request_modes_many(real_cluster, seaweedfs, bench_scale, tmpfs_dir) -> None:  # type: ignore[no-untyped-def]
    """5a. A many-file model: files of a few pieces each, so every range mode is one range per
    file; what differs is how many files are in flight."""
    count, each = _sizes(bench_scale)["many"]
    modes = {m: MODES[m] for m in ("one GET per file", "one GET per file, 16 in flight")}
    _run_modes("many", real_cluster, seaweedfs, tmpfs_dir, {f"1/shard-{i:04d}.bin": each for i in range(count)},
               modes, _rounds(bench_scale))


def test_fanout_real(real_cluster, seaweedfs, bench_scale, tmpfs_dir) -> None:  # type: ignore[no-untyped-def]
    sc = bench_scale
    size = _sizes(sc)["fanout"]
    cluster = real_cluster
    client = _bucket(seaweedfs)
    src = tmpfs_dir / "src-fanout-real" / "model.bin"
    H.write_source(src, size, seed=9)
    client.upload_file(str(src), BUCKET, "fanout/model.bin")
    H.clear_outputs([src.parent])
    nodes = [n for n in (1, 2, 4) if n <= len(cluster.peers)]
    work = tmpfs_dir / "work-fanout-real"
    rows: dict[str, dict[str, Any]] = {}
    table = []
    for n in nodes:
        ratios, times = [], []
        for _ in range(sc["rounds"]):
            tag = f"fanout-{uuid.uuid4().hex[:12]}"
            url = H.presign(client, BUCKET, "fanout/model.bin")
            t0 = _all_traffic(cluster)
            started_at = time.perf_counter()
            started = []
            for i in range(n):
                dest = tmpfs_dir / "dest-fanout-real" / f"node{i + 1}.bin"
                dest.parent.mkdir(parents=True, exist_ok=True)
                spec = {"client": "dfrepo", "config": {"fsync": False}, "url": url, "size": size,
                        "dest": str(dest), "proxy": cluster.peers[i].proxy, "dragonfly": {"tag": tag}}
                started.append(H.start_client(f"node{i + 1}", spec, work))
            for i, s in enumerate(started):
                H.finish_client(f"node{i + 1}", *s, timeout=sc["timeout"])
            total = time.perf_counter() - started_at
            t1 = _all_traffic(cluster)
            ratio = (t1.get("BACK_TO_SOURCE", 0) - t0.get("BACK_TO_SOURCE", 0)) / size
            ratios.append(ratio)
            times.append(total)
            H.clear_outputs([tmpfs_dir / "dest-fanout-real"])
            cluster.forget_all()
        rows[str(n)] = {"nodes": n, "origin_bytes_over_size": statistics.median(ratios),
                        "max_ratio": max(ratios), "total_s": statistics.median(times), "size": size}
        table.append([n, H.human(size), statistics.median(ratios), max(ratios), statistics.median(times),
                      n * size / statistics.median(times) / H.GiB])
        # One copy from the origin however many nodes ask (a small slack for the daemons'
        # 1-byte stat requests and a piece fetched twice when two peers race for it).
        assert max(ratios) < 1.1, f"N={n}: origin bytes / size = {ratios}"
    md = H.markdown_table(["nodes", "object", "origin bytes ÷ size (median)", "max", "total s (median)",
                           "aggregate GiB/s"], table)
    p = H.bar_chart(H.results_dir() / "real_fanout.png", f"Real Dragonfly fan-out, {H.human(size)} object",
                    [f"N={n}" for n in nodes], [rows[str(n)]["total_s"] for n in nodes], "seconds until the last node",
                    annotate=[f"{rows[str(n)]['total_s']:.2f}s\norigin×{rows[str(n)]['origin_bytes_over_size']:.2f}"
                              for n in nodes])
    H.write_result("real_fanout", {"rows": rows, "charts": [str(p)] if p else [],
                                   "cluster": cluster.describe()}, md)


def test_local_hit_grpc_link_vs_proxy_vs_cache(real_cluster, seaweedfs, bench_scale, tmpfs_dir, disk_dir) -> None:  # type: ignore[no-untyped-def]
    """5c. A local-peer hit of a large model on node A, three ways, in one run: the proxy path
    (dfrepo streams every byte from the daemon and writes a second copy), the gRPC path (the
    daemon hard-links its content file: no byte moves) and dfrepo's persistent cache (a hard
    link from dfrepo's own copy). Destinations on the daemons' file system (disk), as in a
    deployment where the link is possible."""
    from dfrepo.cache import ModelCache

    sc = bench_scale
    size = _sizes(sc)["single"]
    cluster = real_cluster
    node = cluster.peers[0]
    _bucket(seaweedfs)
    src = tmpfs_dir / "src-local" / "1" / "weights.bin"
    H.write_source(src, size, seed=13)
    from servers.upload import upload_tree_s3

    upload_tree_s3(seaweedfs, BUCKET, "local", src.parent.parent)
    H.clear_outputs([src.parent.parent])
    env = dict(seaweedfs.triton_env(), TRITON_DRAGONFLY_CONFIG_PATH=str(tmpfs_dir / "none.json"))
    url = seaweedfs.s3_url(BUCKET, "local")
    transfer = TransferConfig(fsync=False)
    cases = {
        "proxy (dfrepo streams)": DragonflyConfig(proxy=node.proxy, fallback_direct=False),
        "gRPC (daemon links)": DragonflyConfig(proxy=node.proxy, transport="grpc", socket=str(node.socket_path),
                                               fallback_direct=False),
        "dfrepo cache (dfrepo links)": DragonflyConfig(proxy=node.proxy, fallback_direct=False),
    }
    cache_dir = disk_dir / "local-hit-cache"
    times: dict[str, list[float]] = {c: [] for c in cases}
    moved: dict[str, dict[str, int]] = {}
    warm = pull(url, disk_dir / "local-warm", env=env, dragonfly=cases["proxy (dfrepo streams)"], transfer=transfer,
                cache=ModelCache(cache_dir))  # node A holds the task, the cache holds the files
    assert warm.bytes == size
    H.clear_outputs([disk_dir / "local-warm"])
    for _ in range(sc["rounds"]):
        for case, df in cases.items():
            dest = disk_dir / "local-hit"
            H.clear_outputs([dest])
            started = time.perf_counter()
            res = pull(url, dest, env=env, dragonfly=df, transfer=transfer,
                       cache=ModelCache(cache_dir) if case.startswith("dfrepo cache") else None)
            times[case].append(time.perf_counter() - started)
            assert res.bytes == size
            moved[case] = {"streamed": res.bytes_streamed, "linked_by_daemon": res.bytes_linked,
                           "copied_by_daemon": res.bytes_copied, "from_dfrepo_cache": res.bytes_from_cache}
            if case.startswith("gRPC"):
                assert res.bytes_linked == size and res.bytes_streamed == 0, res
            H.clear_outputs([dest])
    H.clear_outputs([cache_dir])
    base = statistics.median(times["proxy (dfrepo streams)"])
    rows, table = {}, []
    for case in cases:
        med = statistics.median(times[case])
        rows[case] = {"median_s": med, "min_s": min(times[case]), "speedup_vs_proxy": base / med,
                      "bytes": moved[case], "samples": times[case]}
        table.append([case, H.human(size), med, min(times[case]), base / med, H.human(moved[case]["streamed"]),
                      H.human(moved[case]["linked_by_daemon"]), H.human(moved[case]["copied_by_daemon"]),
                      H.human(moved[case]["from_dfrepo_cache"])])
    md = H.markdown_table(["local hit on node A", "model", "median s", "min s", "× vs proxy", "bytes streamed",
                           "linked by daemon", "copied by daemon", "from dfrepo cache"], table)
    p = H.bar_chart(H.results_dir() / "real_local_hit.png", f"Local-peer hit of a {H.human(size)} model on node A",
                    list(cases), [rows[c]["median_s"] for c in cases], "seconds (median)",
                    annotate=[f"{rows[c]['median_s']:.2f}s\n{rows[c]['speedup_vs_proxy']:.1f}×" for c in cases])
    H.write_result("real_local_hit", {"rows": rows, "charts": [str(p)] if p else []}, md)
