"""CPU smoke test of bench/parallel.py: its world-size 1 and 2 launches over gloo on the tiny model (--tiny)."""

from __future__ import annotations

import json
import math
import multiprocessing

from bench import parallel as bench_parallel


def test_parallel_bench_tiny_on_gloo(tmp_path):
    js = tmp_path / "parallel.json"
    report = bench_parallel.main(["--tiny", "--device", "cpu", "--world-sizes", "1,2", "--blocks", "2",
                                  "--json", str(js)])
    assert multiprocessing.active_children() == []
    assert report["notes"] == []
    rows = {(r["clip"], r["path"], r["world"]): r for r in report["rows"]}
    assert set(rows) == {(clip, path, world) for clip in bench_parallel.CLIPS
                         for path, world in (("parallel", 1), ("single", 1), ("parallel", 2))}
    for (clip, path, world), r in rows.items():
        assert r["first_block_s"] > 0 and r["steady_s"] > 0 and len(r["block_s"]) == 1, (clip, path, world)
        assert math.isfinite(r["speedup_steady"]) and math.isfinite(r["speedup_first_block"])
        assert r["rel_l2_vs_world1"] < 1e-2
    for clip in bench_parallel.CLIPS:
        assert rows[clip, "parallel", 1]["bitwise_vs_single"]  # world size 1 is the single process's arithmetic
        assert rows[clip, "parallel", 1]["speedup_steady"] == 1.0
    saved = json.loads(js.read_text())
    assert [launch["world"] for launch in saved["launches"]] == [1, 2]
    assert saved["launches"][0]["environment"]["device"] == "cpu"
    assert all("latents" not in r and "efficiency" in r for r in saved["rows"])
