"""Scenario 2 — P2P fan-out.

N = 1, 2, 4, 8 simulated nodes pull the same object from SeaweedFS at once.  Each node
is one dfrepo client subprocess talking to its own stand-in peer (``PeerProcess``, a
separate process); peers 2..N have ``parent=`` peer 1 (a parent/child arrangement, the
shape of a Dragonfly scheduler handing out one parent).  Reported per N: origin bytes
÷ object size (sum of every peer's ``origin_bytes``; goal 1.0), total time until the
last node has its verified file, and the aggregate delivered GiB/s.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack

import pytest

import _harness as H
from dfpeer import PeerProcess

pytestmark = [pytest.mark.smoke, pytest.mark.servers]


def test_fanout(seaweedfs, bench_bucket, bench_scale, tmpfs_dir) -> None:
    sc = bench_scale
    size = sc["fanout_size"]
    nodes = sc["fanout_nodes"]
    client, bucket = bench_bucket
    src = tmpfs_dir / "src-fanout" / "model.bin"
    H.write_source(src, size, seed=77)
    key = "fanout/model.bin"
    client.upload_file(str(src), bucket, key)
    url = H.presign(client, bucket, key)
    dest_root = tmpfs_dir / "dest-fanout"
    work = tmpfs_dir / "work-fanout"

    results: dict[int, list[dict]] = {n: [] for n in nodes}
    try:
        with ExitStack() as stack:
            peers = [stack.enter_context(PeerProcess(tmpfs_dir / "peer-1"))]
            for i in range(2, max(nodes) + 1):
                peers.append(stack.enter_context(PeerProcess(tmpfs_dir / f"peer-{i}", parent=peers[0].url)))

            def one(label: str, measured: bool) -> H.Run:
                n = int(label.split("=")[1])
                for p in peers:
                    p.clear_tasks()
                    p.reset_stats()
                H.clear_outputs([dest_root])
                idle = H.idle_fraction(0.3)
                started = []
                t0 = time.perf_counter()
                for i in range(n):
                    dest = dest_root / f"node{i + 1}" / "model.bin"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    spec = {"client": "dfrepo", "implementation": "cython", "config": {},
                            "url": url, "size": size, "dest": str(dest), "proxy": peers[i].url}
                    started.append((dest, H.start_client(f"node{i + 1}", spec, work)))
                runs = [H.finish_client(f"node{i + 1}", *s, timeout=sc["timeout"]) for i, (_, s) in enumerate(started)]
                total = time.perf_counter() - t0
                ok = all(H.same_bytes(d, src, full=sc["full_verify"]) for d, _ in started)
                stats = [p.stats() for p in peers[:n]]
                origin = sum(s["origin_bytes"] for s in stats)
                parent = sum(s["parent_bytes"] for s in stats)
                H.clear_outputs([dest_root])
                assert ok, f"N={n}: a node's file differs from the source"
                if measured:
                    results[n].append({"total_s": total, "origin_bytes": origin, "parent_bytes": parent,
                                       "origin_ratio": origin / size, "node_seconds": [r.seconds for r in runs],
                                       "node_cpu_s": [r.cpu_s for r in runs],
                                       "node_rss_mb": [r.maxrss_kb / 1024 for r in runs], "idle_before": idle,
                                       "sources": sorted({s for r in runs for s in r.extra.get("source", [])})})
                # the round's Run: the slowest node, so run_rounds/summarize stay uniform
                slow = max(runs, key=lambda r: r.seconds)
                slow.client, slow.seconds, slow.verified = label, total, ok
                return slow

            H.run_rounds([f"N={n}" for n in nodes], one, sc, label="fanout")
    finally:
        H.clear_outputs([src.parent, dest_root])

    rows = {}
    for n in nodes:
        rs = results[n]
        total = statistics.median(r["total_s"] for r in rs)
        rows[n] = {
            "nodes": n, "runs": len(rs),
            "total_median_s": total, "total_min_s": min(r["total_s"] for r in rs),
            "origin_ratio_median": statistics.median(r["origin_ratio"] for r in rs),
            "origin_ratio_max": max(r["origin_ratio"] for r in rs),
            "parent_gib_median": statistics.median(r["parent_bytes"] for r in rs) / H.GiB,
            "aggregate_gibps": n * size / H.GiB / total,
            "node_peak_rss_mb": max(max(r["node_rss_mb"]) for r in rs),
        }
    notes = [(f"object {H.human(size)} on SeaweedFS (presigned URL), stand-in peers as separate processes, "
             "peers 2..N parent = peer 1; all N client processes started together; 2-core box, so N clients "
             "+ N peers + SeaweedFS share 2 CPUs — total time measures contention as much as P2P"),
             "origin ratio = Σ peers' origin_bytes ÷ object size (goal 1.0: the origin serves each byte once)"]
    md = H.markdown_table(
        ["N nodes", "total median s", "total min s", "origin bytes ÷ size (median)", "max",
         "from parent GiB", "aggregate GiB/s", "node peak RSS MB"],
        [[n, r["total_median_s"], r["total_min_s"], r["origin_ratio_median"], r["origin_ratio_max"],
          r["parent_gib_median"], r["aggregate_gibps"], r["node_peak_rss_mb"]] for n, r in rows.items()])
    chart = H.line_chart(H.results_dir() / "fanout.png", f"P2P fan-out, {H.human(size)} object",
                         list(nodes), {"origin bytes ÷ size": [rows[n]["origin_ratio_median"] for n in nodes],
                                       "total time (median)": [rows[n]["total_median_s"] for n in nodes]},
                         "nodes", {"origin bytes ÷ size": "ratio", "total time (median)": "seconds"})
    H.write_result("fanout", {"size": size, "rows": {str(k): v for k, v in rows.items()}, "raw": results,
                              "notes": notes, "charts": [str(chart)] if chart else []}, md)
