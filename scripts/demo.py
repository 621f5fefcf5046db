"""The main job on embedded defaults: Triton loads a model from S3 through dfrepo and Dragonfly.

Started by ``bash scripts/demo.sh`` (which installs what it needs first, building the real
Dragonfly once per machine). Everything listens on loopback and everything started here is
stopped here, by PID:

1. SeaweedFS (a real S3 server that checks SigV4) holding a sample model: a python-backend
   ``toy`` model computing ``x + 1`` with a weights file (``--size``, default 256 MiB).
2. The real Dragonfly: scheduler, a seed peer and two peers (node A, node B), each dfdaemon
   on its own loopback address (``tests/servers/dragonfly.py``). ``--standin`` uses the
   project's stand-in peers instead (node B's parent is A).
3. A real ``tritonserver`` (node A) with dfrepo's ``dragonfly`` repository agent installed,
   repository ``s3://127.0.0.1:PORT/models/repo``, explicit model control.

Then: load the model (dfrepo lists it once, fetches every file through node A's dfdaemon,
Triton loads from the local copy), run an inference, unload and load again (dfrepo's
cache), start a second Triton (node B) that loads the same model through node B's daemon
(a remote-peer hit), and print what happened: load times, where the bytes came from (each
daemon's own traffic metrics) and the S3 request log proving Triton never fetched the model
files itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "peer")]

from dfrepo.triton.install import install_agent  # noqa: E402
from servers.models import make_toy_model  # noqa: E402
from servers.s3 import start_seaweedfs  # noqa: E402
from servers.triton import start_triton  # noqa: E402
from servers.upload import upload_tree_s3  # noqa: E402

MiB = 1024 * 1024


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def model_gets(s3, bucket: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(GETs by the Dragonfly peer, GETs by anyone else) of model files seen by the S3 server.

    config.pbtxt is excluded: Triton reads it itself before any agent runs. The peer's
    piece requests carry the client's X-Dragonfly-* headers (dfdaemon forwards them).
    """
    by_peer = by_others = 0
    for req in s3.requests():
        path = req.target.split("?", 1)[0]
        if req.method != "GET" or not path.startswith(f"/{bucket}/") or path.endswith("config.pbtxt"):
            continue
        if "x-dragonfly-use-p2p" in req.headers:
            by_peer += 1
        else:
            by_others += 1
    return by_peer, by_others


class Nodes:
    """Triton "nodes" on one repository: the agent installed once, one credential file, each
    node its own dragonfly_config.json (pointing at its proxy) and its own dfrepo cache."""

    def __init__(self, work: Path, s3, repo_url: str, started: list) -> None:  # type: ignore[no-untyped-def, type-arg]
        self.work, self.s3, self.repo_url, self.started = work, s3, repo_url, started
        self.agents = work / "repoagents"
        lib = install_agent(str(self.agents))
        print(f"[demo] dfrepo agent installed at {lib}")
        self.creds = work / "cloud_credential.json"
        self.creds.write_text(json.dumps({"s3": {"": {"key_id": s3.access_key, "secret_key": s3.secret_key,
                                                       "region": s3.region}}}))
        os.chmod(self.creds, 0o600)

    def start(self, name: str, dragonfly: dict) -> object:  # type: ignore[type-arg]
        cfg = self.work / f"dragonfly_config_{name}.json"
        cfg.write_text(json.dumps(dragonfly))
        env = dict(self.s3.triton_env())
        env.update({"TRITON_DRAGONFLY_CONFIG_PATH": str(cfg), "TRITON_CLOUD_CREDENTIAL_PATH": str(self.creds),
                    "DFREPO_CACHE_DIR": str(self.work / f"cache-{name}")})
        t = start_triton(self.work / f"triton-{name}", self.repo_url, repoagent_dir=str(self.agents), env=env)
        self.started.append(t)
        return t

    @staticmethod
    def load(t, label: str) -> float:  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        status, body = t.load("toy")
        dt = time.monotonic() - t0
        if status != 200:
            raise SystemExit(f"[demo] load failed ({status}): {body}\n{t.log()[-3000:]}")
        print(f"[demo] {label}: model READY in {dt:.2f} s")
        return dt


def traffic_line(cluster, before: dict, after: dict) -> str:  # type: ignore[no-untyped-def]
    parts = []
    for name in after:
        delta = {k: after[name].get(k, 0) - before.get(name, {}).get(k, 0) for k in after[name]}
        moved = ", ".join(f"{k.lower().replace('_', '-')} {human(v)}" for k, v in sorted(delta.items()) if v)
        if moved:
            parts.append(f"{name}: {moved}")
    return "; ".join(parts) or "no daemon moved a byte"


def real_main(args: argparse.Namespace, size: int, work: Path, started: list) -> dict:  # type: ignore[type-arg]
    from servers.dragonfly import start_dragonfly_cluster

    s3 = start_seaweedfs(work / "seaweedfs")
    started.append(s3)
    print(f"[demo] SeaweedFS S3 on {s3.endpoint}")
    make_toy_model(work / "model-src", "toy", add=1.0, payload_bytes=size, agent="dragonfly", verify_payload=True)
    upload_tree_s3(s3, "models", "repo", work / "model-src")
    repo_url = s3.s3_url("models", "repo")
    print(f"[demo] uploaded model 'toy' ({human(size)} of weights) to {repo_url}")
    print("[demo] starting the real Dragonfly: scheduler, seed peer, peers A and B "
          "(about 30 s: the scheduler learns its seed peers on a 30 s timer)")
    cluster = start_dragonfly_cluster(work / "dragonfly", peers=2)
    started.append(cluster)
    node_a, node_b = cluster.peers
    print(f"[demo] scheduler {cluster.scheduler.addr}; seed {cluster.seed.ip}; "
          f"node A dfdaemon {node_a.proxy}; node B dfdaemon {node_b.proxy}")
    nodes = Nodes(work, s3, repo_url, started)
    load = nodes.load
    triton_a = nodes.start("a", {"proxy": node_a.proxy, "fallback_direct": False})
    print(f"[demo] tritonserver node A on {triton_a.http_url}")  # type: ignore[attr-defined]
    s3.clear_log()
    t0 = cluster.traffic()
    t_cold = load(triton_a, "node A, cold (origin -> seed peer -> node A's dfdaemon -> dfrepo)")
    out = triton_a.infer_fp32("toy", "INPUT0", [1, 2, 3, 4], "OUTPUT0")  # type: ignore[attr-defined]
    print(f"[demo] inference toy([1, 2, 3, 4]) = {out}")
    assert out == [2.0, 3.0, 4.0, 5.0], out
    t1 = cluster.traffic()
    by_peer, by_others = model_gets(s3, "models")
    print(f"[demo] daemons' traffic metrics: {traffic_line(cluster, t0, t1)}")
    print(f"[demo] S3 GETs of model files: {by_peer} by Dragonfly daemons, {by_others} by anyone else "
          "(Triton and dfrepo never fetched them)")
    if by_others:
        raise SystemExit("[demo] unexpected: something other than a Dragonfly daemon fetched model files")

    triton_a.unload("toy")  # type: ignore[attr-defined]
    s3.clear_log()
    t_reload = load(triton_a, "node A, reload (dfrepo persistent cache)")
    t2 = cluster.traffic()
    print(f"[demo] reload: {traffic_line(cluster, t1, t2)}; S3 model-file GETs: "
          f"{sum(model_gets(s3, 'models'))} (files hard-linked from the dfrepo cache)")

    s3.clear_log()
    triton_b = nodes.start("b", {"proxy": node_b.proxy, "fallback_direct": False})
    t_remote = load(triton_b, "node B, first load (remote-peer hit: pieces from the seed and node A)")
    out_b = triton_b.infer_fp32("toy", "INPUT0", [1, 2, 3, 4], "OUTPUT0")  # type: ignore[attr-defined]
    t3 = cluster.traffic()
    weights_gets = [r for r in s3.requests() if r.method == "GET" and r.target.split("?", 1)[0].endswith(
        "weights.bin") and r.headers.get("range", "").replace(" ", "") != "bytes=0-0"]
    print(f"[demo] node B inference = {out_b}; {traffic_line(cluster, t2, t3)}; S3 content GETs of the "
          f"weights: {len(weights_gets)} (node B's daemon only sent its 1-byte stat)")
    return {
        "dragonfly": cluster.describe(),
        "model_bytes": size,
        "load_seconds": {"cold": t_cold, "reload_cache": t_reload, "node_b_remote_peer": t_remote},
        "s3_model_gets_node_a": {"by_daemons": by_peer, "by_others": by_others},
        "node_b_weights_content_gets": len(weights_gets),
        "inference": out,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256", help="weights size in MiB (default 256)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--standin", action="store_true",
                    help="use the project's stand-in peers (peer/dfpeer) instead of the real Dragonfly")
    args = ap.parse_args()
    size = int(float(args.size) * MiB)

    work = Path(tempfile.mkdtemp(prefix="dfrepo-demo-"))
    started: list = []  # type: ignore[type-arg]
    report: dict[str, object] = {}
    try:
        print(f"[demo] work dir {work}")
        if not args.standin:
            report = real_main(args, size, work, started)
            print("[demo] summary:")
            print(json.dumps(report, indent=2))
            return 0
        from dfpeer import PeerProcess

        s3 = start_seaweedfs(work / "seaweedfs")
        started.append(s3)
        print(f"[demo] SeaweedFS S3 on {s3.endpoint}")
        make_toy_model(work / "model-src", "toy", add=1.0, payload_bytes=size, agent="dragonfly",
                       verify_payload=True)
        upload_tree_s3(s3, "models", "repo", work / "model-src")
        repo_url = s3.s3_url("models", "repo")
        print(f"[demo] uploaded model 'toy' ({human(size)} of weights) to {repo_url}")

        peer_a = PeerProcess(work / "peer-a").start()
        started.append(peer_a)
        peer_b = PeerProcess(work / "peer-b", parent=peer_a.url).start()
        started.append(peer_b)
        print(f"[demo] Dragonfly STAND-IN peers (--standin): A {peer_a.url}, B {peer_b.url} (parent A)")

        nodes = Nodes(work, s3, repo_url, started)
        load = nodes.load
        triton_a = nodes.start("a", {"proxy": peer_a.url})
        print(f"[demo] tritonserver node A on {triton_a.http_url}")  # type: ignore[attr-defined]
        s3.clear_log()
        peer_a.reset_stats()
        t_cold = load(triton_a, "node A, cold (origin -> peer A -> dfrepo)")
        out = triton_a.infer_fp32("toy", "INPUT0", [1, 2, 3, 4], "OUTPUT0")  # type: ignore[attr-defined]
        print(f"[demo] inference toy([1, 2, 3, 4]) = {out}")
        assert out == [2.0, 3.0, 4.0, 5.0], out
        stats_a = peer_a.stats()
        by_peer, by_others = model_gets(s3, "models")
        print(f"[demo] origin bytes fetched by peer A: {human(stats_a['origin_bytes'])}; S3 GETs of model "
              f"files: {by_peer} by the Dragonfly peer, {by_others} by anyone else (Triton never fetched them)")
        if by_others:
            raise SystemExit("[demo] unexpected: something other than the peer fetched model files")

        triton_a.unload("toy")  # type: ignore[attr-defined]
        peer_a.reset_stats()
        s3.clear_log()
        t_reload = load(triton_a, "node A, reload (dfrepo persistent cache)")
        reload_served = peer_a.stats()["served_bytes"]
        print(f"[demo] reload: peer A served {human(reload_served)}, S3 model-file GETs: "
              f"{sum(model_gets(s3, 'models'))} (files hard-linked from the dfrepo cache)")

        peer_a.reset_stats()
        triton_b = nodes.start("b", {"proxy": peer_b.url})
        t_remote = load(triton_b, "node B, first load (remote-peer hit via peer A)")
        out_b = triton_b.infer_fp32("toy", "INPUT0", [1, 2, 3, 4], "OUTPUT0")  # type: ignore[attr-defined]
        stats_b = peer_b.stats()
        print(f"[demo] node B inference = {out_b}; peer B took {human(stats_b.get('parent_bytes', 0))} from "
              f"peer A and {human(stats_b['origin_bytes'])} from the origin")

        report = {
            "model_bytes": size,
            "load_seconds": {"cold": t_cold, "reload_cache": t_reload, "node_b_remote_peer": t_remote},
            "origin_bytes_node_a": stats_a["origin_bytes"],
            "s3_model_gets_node_a": {"by_peer": by_peer, "by_others": by_others},
            "reload_bytes_from_peer": reload_served,
            "node_b": {"parent_bytes": stats_b.get("parent_bytes", 0), "origin_bytes": stats_b["origin_bytes"]},
            "inference": out,
        }
        print("[demo] summary:")
        print(json.dumps(report, indent=2))
        return 0
    finally:
        for proc in reversed(started):
            try:
                proc.stop() if hasattr(proc, "stop") else proc.close()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"[demo] stopping {type(proc).__name__}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"[demo] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
