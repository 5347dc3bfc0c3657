"""CPU smoke test of bench/endless.py: a tiny model, 12 rolling-window blocks (the window fills at block 7
and evicts from block 8 on), the reported lines and finite per-block times."""

from __future__ import annotations

import json
import math
import re

from bench import endless


def test_endless_tiny_cpu(capsys, tmp_path):
    out = tmp_path / "endless.json"
    results = endless.main(["--device", "cpu", "--tiny", "--blocks", "12", "--report", "7,12", "--json", str(out)])
    text = capsys.readouterr().out
    lines = re.findall(r"^block (\d+): ([0-9.]+) s, peak n/a, allocated n/a$", text, flags=re.M)
    assert [int(b) for b, _ in lines] == [7, 12], text
    assert all(math.isfinite(float(s)) and float(s) > 0 for _, s in lines), text
    assert re.search(r"^summary: mean of last 10 blocks [0-9.]+ s/block, max peak n/a \| CPU .* \| torch ", text,
                     flags=re.M), text

    blocks = results["blocks"]
    assert len(blocks["seconds"]) == 12
    assert all(math.isfinite(s) and s > 0 for s in blocks["seconds"])
    assert blocks["peak_gib"] == [None] * 12 and blocks["allocated_gib"] == [None] * 12
    assert results["summary"]["finite"] and results["summary"]["mean_last_n"] == 10
    saved = json.loads(out.read_text())
    assert saved["settings"]["policy"] == "rolling" and saved["settings"]["blocks"] == 12
    assert saved["blocks"]["seconds"] == blocks["seconds"]
