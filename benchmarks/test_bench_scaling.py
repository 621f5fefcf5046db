"""Scenario 3 — scaling: dfrepo compiled time and peak RSS against object size.

Smoke 16/64/256 MiB, full 64 MiB … 4 GiB; nginx origin (files on tmpfs), tmpfs
destination.  Shows that cost grows linearly (least-squares fit of wall time on size,
R²) and that memory stays flat (peak RSS spread across sizes).
"""

from __future__ import annotations

import statistics

import pytest

import _harness as H

pytestmark = [pytest.mark.smoke, pytest.mark.servers]


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x; returns (a, b, r2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, (1 - ss_res / ss_tot) if ss_tot else 1.0


def test_scaling(nginx_origin, bench_scale, tmpfs_dir) -> None:
    sc = bench_scale
    sizes = sc["scaling_sizes"]
    src_dir = tmpfs_dir / "src-scaling"
    sources = {}
    for i, size in enumerate(sizes):
        name = f"scale-{size}.bin"
        path = src_dir / name
        H.write_source(path, size, seed=50 + i)
        link = nginx_origin.root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
        sources[H.human(size)] = (size, path, nginx_origin.url(name), link)
    dest_root = tmpfs_dir / "dest-scaling"
    work = tmpfs_dir / "work-scaling"
    try:
        def one(label: str, measured: bool) -> H.Run:
            size, path, url, _ = sources[label]
            dest = dest_root / f"{label.replace(' ', '')}.bin"
            dest.parent.mkdir(parents=True, exist_ok=True)
            run = H.run_client(label, {"client": "dfrepo", "implementation": "cython",
                                       "config": {}, "url": url, "size": size,
                                       "dest": str(dest)}, work, sc["timeout"])
            run.verified = H.same_bytes(dest, path, full=sc["full_verify"])
            H.clear_outputs([dest])
            assert run.verified
            return run

        rounds = H.run_rounds(list(sources), one, sc, label="scaling")
    finally:
        for _, path, _, link in sources.values():
            link.unlink()
            H.clear_outputs([path])

    rows = {}
    for label, (size, *_rest) in sources.items():
        t = H.summarize(rounds, size, [label])[label]
        rows[label] = {**t, "size": size}
    xs = [r["size"] / H.GiB for r in rows.values()]
    ys = [r["wall_median_s"] for r in rows.values()]
    a, b, r2 = _fit(xs, ys)
    rss = [r["peak_rss_mb"] for r in rows.values()]
    spread = max(rss) - min(rss)
    notes = [
        f"wall ≈ {a:.3f} s + {b:.3f} s/GiB × size (R² = {r2:.3f}); "
        f"marginal rate {1 / b if b > 0 else float('nan'):.2f} GiB/s",
        (f"peak RSS {min(rss):.1f}–{max(rss):.1f} MB across {H.human(sizes[0])}–{H.human(sizes[-1])} "
        f"(spread {spread:.1f} MB; goal: flat, ≤ 64 MB)"),
        "per-size CPU-s/GiB includes fixed per-download costs, which dominate at small sizes",
    ]
    md = H.markdown_table(
        ["size", "wall median s", "wall min s", "GiB/s median", "CPU-s/GiB", "peak RSS MB", "verified"],
        [[k, r["wall_median_s"], r["wall_min_s"], r["gibps_median"], r["cpu_s_per_gib"], r["peak_rss_mb"],
          r["verified"]] for k, r in rows.items()])
    chart = H.line_chart(H.results_dir() / "scaling.png", "dfrepo compiled: cost vs object size",
                         xs, {"wall time (median)": ys, "peak RSS": rss},
                         "object size (GiB)", {"wall time (median)": "seconds", "peak RSS": "MB"})
    H.write_result("scaling", {"sizes": sizes, "rows": rows, "fit": {"intercept_s": a, "s_per_gib": b, "r2": r2},
                               "rss_spread_mb": spread, "rounds": H.rounds_json(rounds), "notes": notes,
                               "charts": [str(chart)] if chart else []}, md)
    assert statistics.median(rss) > 0
