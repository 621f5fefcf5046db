"""Scenario "fill the link" — an origin that serves each connection at a fixed rate.

Object stores cap every connection (S3 and GCS give roughly 50–100 MB/s each), so one
stream cannot fill a fast NIC and the number of connections decides the throughput.
Here the origin is SeaweedFS behind nginx with ``limit_rate`` per connection (the client's
``Host`` forwarded, so presigned URLs and S3 signatures stay valid): every client — dfrepo
(adaptive and the old fixed 4), the stdlib floor (8 threads), one urllib3 stream,
hf_transfer, boto3's classic s3transfer and awscrt — fetches from the same endpoint.

Workloads: one large object (smoke 64 MiB, full 2 GiB) and a model of many files (smoke
100 × 256 KiB, full 1000 × 1 MiB), to tmpfs. The claims (asserted on every run, smoke
included): every output verified and dfrepo's peak RSS ≤ 64 MB; at the full scale also
dfrepo ≥ 90 % of the best other client on both workloads and ≥ 8× a single stream on the
large object. (The smoke sizes last about a second, which the ramp-up of the adaptive
limit dominates; their ratios are reported, not asserted. The single stream runs only at
the full scale — at the smoke scale the ratio is taken against the origin's per-connection
rate, which no single stream can exceed.)

Scenario "fill the link, with latency" — the same origin with a time-to-first-byte added to
every request: a delaying proxy (tests/servers/latency_proxy, Go, built at test time) in front
of the rate-limited nginx, 30 ms per request (a same-region S3/GCS GET's first byte takes tens
of milliseconds). The client sees both: each of its connections is one nginx connection at the
fixed rate, and each request waits 30 ms before its first byte. Same clients, same claims; the
many-file model (full 1000 × 1 MiB: 1000+ requests) is where request count and concurrency
matter most. Smoke sizes are smaller (128 MiB, 32 of the files) to keep the smoke run short.
The proxy's CPU is measured per run (it must not be the bottleneck: < half a core, asserted).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import _harness as H

pytestmark = [pytest.mark.smoke, pytest.mark.servers]

#: Per-connection rate of the origin (nginx ``limit_rate``: bytes per second).
RATE = {"smoke": "24m", "full": "24m"}
SIZES = {"smoke": {"large": 384 * H.MiB, "count": 200, "size": 1 * H.MiB},
         "full": {"large": 2 * H.GiB, "count": 1000, "size": 1 * H.MiB}}
#: Time to first byte the latency proxy adds to every request (ms).
DELAY_MS = 30.0
#: The latency scenario's workloads: the large object's size (the link one when equal) and how
#: many of the link files make the model.
LATENCY_SIZES = {"smoke": {"large": 128 * H.MiB, "count": 32},
                 "full": {"large": 2 * H.GiB, "count": 1000}}


def _s3_client(seaweedfs: Any, endpoint: str) -> Any:
    """The SeaweedFS credentials, addressed through *endpoint* (signatures use its host)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key, region_name=seaweedfs.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, proxies={}))


def _origin(name: str, endpoint: str, seaweedfs: Any, bucket: str, description: str, title: str,
            **extra: Any) -> dict[str, Any]:
    """What ``_run`` needs of one origin: its endpoint, a client and S3 spec for it, its words
    (*description* for the notes, *title* for the charts) and the objects (``large``, ``many``)."""
    return {"name": name, "endpoint": endpoint, "client": _s3_client(seaweedfs, endpoint), "bucket": bucket,
            "seaweedfs": seaweedfs, "s3": {**H.s3_spec(seaweedfs, bucket), "endpoint": endpoint},
            "origin": description, "title": title, **extra}


@pytest.fixture(scope="module")
def link(seaweedfs, bench_bucket, tmpfs_dir, tmp_path_factory):
    """Objects on SeaweedFS and a rate-limited nginx in front of it."""
    from servers.nginx import start_nginx

    sizes = SIZES[H.scale_name()]
    client, bucket = bench_bucket
    src = tmpfs_dir / "link-src"
    src.mkdir(parents=True, exist_ok=True)
    large = src / "large.bin"
    H.write_source(large, sizes["large"], seed=21)
    client.upload_file(str(large), bucket, "link/large.bin")
    many = []
    for i in range(sizes["count"]):
        p = src / "many" / f"w{i:04d}.bin"
        p.parent.mkdir(exist_ok=True)
        H.write_source(p, sizes["size"], seed=3000 + i)
        client.upload_file(str(p), bucket, f"link/many/{p.name}")
        many.append(("link/many/" + p.name, p))
    upstream = seaweedfs.direct_endpoint.split("://", 1)[1]
    proxy = start_nginx(tmp_path_factory.mktemp("link-nginx"), upstream=upstream,
                        limit_rate=RATE[H.scale_name()])
    rate = RATE[H.scale_name()]
    try:
        yield _origin("link", proxy.base_url, seaweedfs, bucket,
                      f"SeaweedFS behind nginx, limit_rate {rate} (= {_rate_bytes() / 1e6:.1f} MB/s) per connection",
                      f"Rate-limited origin ({rate}/connection)",
                      large=("link/large.bin", large), many=many, proxy=proxy, nginx=proxy, src=src)
    finally:
        proxy.stop()
        shutil.rmtree(src, ignore_errors=True)


@pytest.fixture(scope="module")
def latency(link, bench_bucket, tmp_path_factory):
    """The link origin behind the delaying proxy: DELAY_MS before every request's first byte."""
    from servers.latency import start_latency_proxy

    sizes = LATENCY_SIZES[H.scale_name()]
    large = link["large"]
    if sizes["large"] != large[1].stat().st_size:  # smoke: a smaller object of its own
        path = link["src"] / "large-latency.bin"
        H.write_source(path, sizes["large"], seed=22)
        bench_bucket[0].upload_file(str(path), link["bucket"], "link/large-latency.bin")
        large = ("link/large-latency.bin", path)
    nginx = link["proxy"]
    proxy = start_latency_proxy(tmp_path_factory.mktemp("link-latency"), f"{nginx.host}:{nginx.port}",
                                delay_ms=DELAY_MS)
    try:
        yield _origin("link_latency", proxy.base_url, link["seaweedfs"], link["bucket"],
                      f"{link['origin']}, behind a proxy adding {DELAY_MS:g} ms to every request's first byte "
                      "(tests/servers/latency_proxy)",
                      f"Rate-limited origin ({RATE[H.scale_name()]}/connection) + {DELAY_MS:g} ms/request",
                      large=large, many=link["many"][:sizes["count"]], nginx=nginx, latency_proxy=proxy)
    finally:
        proxy.stop()


def _rate_bytes() -> int:
    """The per-connection rate in bytes/s (nginx's ``m`` is 2**20)."""
    return int(RATE[H.scale_name()].rstrip("m")) * H.MiB


def _clients(url_items: list[dict[str, Any]], s3: dict[str, Any], many: bool) -> dict[str, dict[str, Any]]:
    clients: dict[str, dict[str, Any]] = {
        "dfrepo": {"client": "dfrepo", "implementation": "cython", "config": {}},
        "dfrepo-fixed4": {"client": "dfrepo", "implementation": "cython", "config": {"concurrency": 4}},
        "stdlib-8threads": {"client": "stdlib", "threads": 8},
        "hf_transfer": {"client": "hf_transfer", "max_files": 100, "chunk_size": 10 * H.MiB},
        "boto3-classic": {"client": "boto3", "s3": s3, "_keys": True},
        "awscrt": {"client": "awscrt", "s3": s3, "_keys": True},
    }
    if not many and H.scale_name() == "full":
        clients["urllib3-1stream"] = {"client": "urllib3"}
    return clients


def _targets(table: dict[str, dict[str, Any]], *, single: bool) -> tuple[list[str], dict[str, float]]:
    ours = table["dfrepo"]["gibps_median"]
    others = {n: r["gibps_median"] for n, r in table.items() if not n.startswith("dfrepo") and r["gibps_median"]}
    best_name = max(others, key=lambda n: others[n])
    facts = {"of_best": ours / others[best_name]}
    notes = [H.target(f"dfrepo ÷ best other client ({best_name})", facts["of_best"], 0.9)]
    if single:
        one = table.get("urllib3-1stream", {}).get("gibps_median") or _rate_bytes() / H.GiB
        facts["of_single"] = ours / one
        notes.append(H.target("dfrepo ÷ one stream" + ("" if "urllib3-1stream" in table else
                                                       " (the per-connection rate)"), facts["of_single"], 8))
    facts["rss"] = table["dfrepo"]["peak_rss_mb"]
    notes.append(H.target("dfrepo peak RSS MB", facts["rss"], 64, higher_is_better=False))
    notes.append(H.target("dfrepo CPU-s/GiB", table["dfrepo"]["cpu_s_per_gib"], 0.5, higher_is_better=False))
    return notes, facts


def _run(kind: str, origin: dict[str, Any], tmpfs_dir: Path, sc: dict[str, Any]) -> None:
    """One workload (``large`` or ``many``) from one origin (the ``link`` or ``latency`` fixture)."""
    import statistics

    many = kind == "many"
    scenario = f"{origin['name']}_{kind}"
    client, bucket, nginx = origin["client"], origin["bucket"], origin["nginx"]
    lat = origin.get("latency_proxy")
    objs = origin["many"] if many else [origin["large"]]
    sizes = {key: p.stat().st_size for key, p in objs}
    total = sum(sizes.values())
    # Presigned once, outside the timing (every URL client gets the same ones).
    urls = {key: H.presign(client, bucket, key) for key, _ in objs}
    specs = _clients([], origin["s3"], many)
    dest_root, work = tmpfs_dir / f"{scenario}-dest", tmpfs_dir / f"{scenario}-work"
    requests: dict[str, list[int]] = {n: [] for n in specs}  # requests nginx served, per measured run
    proxy_cpu: dict[str, list[float]] = {n: [] for n in specs}  # the latency proxy's CPU-s, per run
    proxy_cores: dict[str, list[float]] = {n: [] for n in specs}  # ... ÷ the client's transfer time

    def one(name: str, measured: bool) -> H.Run:
        dest = dest_root / name
        H.clear_outputs([dest])
        dest.mkdir(parents=True)
        spec = {k: v for k, v in specs[name].items() if not k.startswith("_")}
        items = []
        for key, _ in objs:
            item: dict[str, Any] = {"dest": str(dest / Path(key).name), "size": sizes[key]}
            item["key" if specs[name].get("_keys") else "url"] = key if specs[name].get("_keys") else urls[key]
            items.append(item)
        spec["files"] = items
        nginx.clear_log()
        cpu0 = lat.cpu_seconds() if lat else 0.0
        run = H.run_client(name, spec, work, sc["timeout"])
        if measured:
            requests[name].append(len(nginx.access_entries()))
            if lat:
                proxy_cpu[name].append(lat.cpu_seconds() - cpu0)
                proxy_cores[name].append(proxy_cpu[name][-1] / run.seconds)
        step = 1 if sc["full_verify"] or not many else 10
        ok = all(Path(it["dest"]).stat().st_size == sizes[key] for it, (key, _) in zip(items, objs, strict=True))
        ok = ok and all(H.same_bytes(Path(items[i]["dest"]), objs[i][1], full=sc["full_verify"] or many)
                        for i in range(0, len(objs), step))
        run.verified = ok
        H.clear_outputs([dest])
        assert ok, f"{name}: output differs from the source"
        return run

    rounds = H.run_rounds(list(specs), one, sc, label=scenario)
    table = H.summarize(rounds, total, list(specs))
    H.add_ratios(table, "dfrepo")
    for name, row in table.items():
        row["origin_requests"] = statistics.median_low(requests[name])
        if lat:
            row["proxy_cpu_s_per_gib"] = statistics.median(proxy_cpu[name]) / (total / H.GiB)
            row["proxy_cores_max"] = max(proxy_cores[name])
    notes = [(f"origin: {origin['origin']}; "
              f"{f'{len(objs)} files × {H.human(total // len(objs))}' if many else H.human(total)}"
              " → tmpfs; dfrepo = default settings (adaptive concurrency), dfrepo-fixed4 = the previous fixed 4; "
              "hf_transfer with huggingface_hub's 100 connections; boto3 classic default TransferConfig "
              "(10 threads); awscrt 10 Gbps target, 8 MiB parts; requests = what nginx served per run (median)")]
    target_notes, facts = _targets(table, single=not many)
    notes += target_notes
    md = H.client_table(table)
    extra_cols = ["client", "requests to the origin (median)"]
    if lat:
        facts["proxy_cores_max"] = max(r["proxy_cores_max"] for r in table.values())
        notes.append(H.target("latency proxy CPU, cores busy (max over runs)", facts["proxy_cores_max"], 0.5,
                              higher_is_better=False))
        extra_cols += ["latency proxy CPU-s/GiB", "latency proxy cores (max)"]
    md += "\n\n" + H.markdown_table(extra_cols, [
        [n, r["origin_requests"], *([r["proxy_cpu_s_per_gib"], r["proxy_cores_max"]] if lat else [])]
        for n, r in table.items()])
    chart = H.bar_chart(H.results_dir() / f"{scenario}.png",
                        f"{origin['title']}: {'many files' if many else H.human(total)} (GiB/s, median)",
                        list(table), [r["gibps_median"] for r in table.values()], "GiB/s",
                        highlight=[list(table).index("dfrepo")])
    workload = {"kind": kind, "bytes": total, "files": len(objs), "rate_per_connection": RATE[H.scale_name()]}
    if lat:
        workload["delay_ms_per_request"] = DELAY_MS
    H.write_result(scenario, {"workload": workload, "clients": table, "rounds": H.rounds_json(rounds),
                              "notes": notes, "facts": facts, "charts": [str(chart)] if chart else []}, md)
    assert all(r["verified"] for r in table.values())
    assert facts["rss"] <= 64, notes
    if lat:
        assert facts["proxy_cores_max"] < 0.5, notes  # the proxy is not what limits anyone
    if H.scale_name() == "full":
        assert facts["of_best"] >= 0.9, notes
        if not many:
            assert facts["of_single"] >= 8, notes


def test_link_large(link, tmpfs_dir, bench_scale) -> None:
    _run("large", link, tmpfs_dir, bench_scale)


def test_link_many(link, tmpfs_dir, bench_scale) -> None:
    _run("many", link, tmpfs_dir, bench_scale)


def test_link_latency_large(latency, tmpfs_dir, bench_scale) -> None:
    _run("large", latency, tmpfs_dir, bench_scale)


def test_link_latency_many(latency, tmpfs_dir, bench_scale) -> None:
    _run("many", latency, tmpfs_dir, bench_scale)


TRITON_SIZES = {"smoke": 64 * H.MiB, "full": 2 * H.GiB}


@pytest.mark.triton
def test_link_triton(link, seaweedfs, triton_server, bench_scale, tmpfs_dir, disk_dir) -> None:
    """Triton loading one model from the rate-limited origin: its own S3 download vs the
    dfrepo agent (no Dragonfly: straight to the store, the same endpoint). Both load times
    include the same model start-up and an inference."""
    import json
    import statistics
    import time

    from servers.models import make_toy_model
    from servers.upload import upload_tree_s3
    from test_bench_triton import _install_agent, _unload

    sc = bench_scale
    size = TRITON_SIZES[H.scale_name()]
    name = f"link_{size // H.MiB}m"
    root = tmpfs_dir / "link-triton-models"
    make_toy_model(root, name, payload_bytes=size, verify_payload=False)
    upload_tree_s3(seaweedfs, link["bucket"], "linktriton", root)
    shutil.rmtree(root, ignore_errors=True)
    repo_url = f"s3://{link['proxy'].host}:{link['proxy'].port}/{link['bucket']}/linktriton"
    work = tmpfs_dir / "link-triton-work"
    work.mkdir(parents=True, exist_ok=True)
    dragonfly_json = work / "dragonfly_config.json"
    dragonfly_json.write_text(json.dumps({"fallback_direct": True}))  # no proxy: the store itself
    cache = disk_dir / "link-triton-cache"
    agent = {"name": name, "backend": "python", "max_batch_size": 0,
             "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
             "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4], "label_filename": "labels.txt"}],
             "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
             "model_repository_agents": {"agents": [{"name": "dragonfly"}]}}
    cases = {"triton-s3": None, "triton+dfrepo": agent}
    times: dict[str, list[float]] = {c: [] for c in cases}
    handle = triton_server(repo_url, repoagent_dir=str(_install_agent(work)),
                           env=dict(seaweedfs.triton_env(), DFREPO_CACHE_DIR=str(cache),
                                    TRITON_DRAGONFLY_CONFIG_PATH=str(dragonfly_json)))
    try:
        def one(case: str, measured: bool) -> H.Run:
            H.clear_outputs([cache])  # never a cache hit: every load downloads
            t0 = time.perf_counter()
            status, body = handle.load(name, cases[case], timeout=sc["timeout"])
            dt = time.perf_counter() - t0
            assert status == 200, f"{case}: load -> {status}: {body[:300]}"
            assert handle.infer_fp32(name, "INPUT0", [1, 2, 3, 4], "OUTPUT0") == [2, 3, 4, 5]
            _unload(handle, name)
            if measured:
                times[case].append(dt)
            return H.Run(case, dt, 0.0, 0.0, dt, 0, 0)

        H.run_rounds(list(cases), one, sc, label="link_triton")
    finally:
        handle.stop()
        H.clear_outputs([cache])
    med = {c: statistics.median(ts) for c, ts in times.items()}
    ratio = med["triton-s3"] / med["triton+dfrepo"]
    rows = [[c, med[c], min(times[c]), med["triton-s3"] / med[c], len(times[c])] for c in cases]
    md = H.markdown_table(["case", "load median s", "min s", "speedup vs Triton S3", "runs"], rows)
    notes = [f"python-backend toy model, {H.human(size)} weights, repository {repo_url} (nginx limit_rate "
             f"{RATE[H.scale_name()]} per connection in front of SeaweedFS); each load followed by an inference "
             "and an unload; the dfrepo agent with no Dragonfly proxy (straight to the store) and its cache emptied",
             H.target("Triton+dfrepo ÷ Triton's own S3 (load time)", ratio, 1.0)]
    chart = H.bar_chart(H.results_dir() / "link_triton.png",
                        f"Triton load from a rate-limited store ({RATE[H.scale_name()]}/connection), "
                        f"{H.human(size)} (s, median)", list(cases), [med[c] for c in cases], "load time (s)",
                        annotate=[f"{med[c]:.2f}s" for c in cases], highlight=[1])
    H.write_result("link_triton", {"model": {"name": name, "size": size}, "times": times, "notes": notes,
                                   "charts": [str(chart)] if chart else []}, md)
    assert all(len(ts) == sc["rounds"] for ts in times.values())
    if H.scale_name() == "full":
        assert ratio >= 1.0, notes
