"""CPU smoke test of bench/parallel.py: its world-size 1 and 2 launches over gloo on the tiny model (--tiny), and
its ranks sharing rank 0's weights."""

from __future__ import annotations

import json
import math
import multiprocessing

import torch

from bench import parallel as bench_parallel
from causal.parallel import SequenceParallel, run_local
from tools.tiny import tiny_model


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


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten() for t in model.parameters()])


def _weights_of_rank_seed(parallel: SequenceParallel) -> tuple[bool, torch.Tensor]:
    model = tiny_model(torch.bfloat16, seed=parallel.rank)  # rank 1 draws other weights
    return bench_parallel._same_weights(model, parallel, torch.device("cpu")), _flat(model)


def test_ranks_that_drew_other_weights_get_rank_0s():
    (broadcast0, weights0), (broadcast1, weights1) = run_local(_weights_of_rank_seed, 2, timeout_s=30.0)
    assert broadcast0 and broadcast1
    assert torch.equal(weights0, weights1) and torch.equal(weights0, _flat(tiny_model(torch.bfloat16, seed=0)))
