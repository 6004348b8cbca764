"""Smoke test of bench/cells.py at toy sizes: every cell of the table is measured in both scopes and the JSON is
complete. Nothing is timed here."""

import json
import math

import torch

from rnn_lm_hf.configuration_rnn_lm import CELL_TYPES
from tests.conftest import load_bench_script


def test_cells_script_measures_every_cell_of_the_table(tmp_path):
    cells = load_bench_script("cells")
    threads = torch.get_num_threads()
    out = tmp_path / "cells.json"
    argv = ["--threads", "1", "--widths", "16", "--vocab", "50", "--batch", "2", "--bptt", "9", "--repeats", "2"]
    argv += ["--train-steps", "1", "--warmup", "1", "--prompt", "5", "--new-tokens", "3", "--out", str(out)]
    try:
        returned = cells.main(argv)
    finally:
        torch.set_num_threads(threads)  # the script sets it for the whole process
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["environment"]["threads"] == 1 and results["settings"]["bptt"] == 9
    row = results["widths"]["16"]
    assert set(row["parameters"]) == set(CELL_TYPES)  # the table decides what is measured
    for scope in cells.SCOPES:
        for cell in CELL_TYPES:
            stats = row["train_tokens_per_s"][scope][cell]
            assert len(stats["values"]) == 2 and all(math.isfinite(v) and v > 0 for v in stats["values"])
        assert row["train_speedup_vs_lstm"][scope]["lstm"]["median"] == 1.0  # each repeat paired with itself
    assert all(row["decode_ms_per_token"][cell]["median"] > 0 for cell in CELL_TYPES)
    assert row["decode_cost_vs_lstm"]["lstm"]["median"] == 1.0


def test_cell_choice_script_times_the_three_parallel_cells_and_the_lstm():
    choice = load_bench_script("cell_choice")
    threads = torch.get_num_threads()
    try:
        results = choice.main(["--widths", "8", "--batch", "2", "--bptt", "9", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert set(results[8]) == {"minGRU", "minLSTM", "QRNN", "LSTM"}
    assert all(row["ms"] > 0 for row in results[8].values())
    sizes = {name: row["parameters"] for name, row in results[8].items()}
    assert sizes["minGRU"] < sizes["minLSTM"] < sizes["QRNN"] < sizes["LSTM"]  # 2, 3, 3 (of 2x input) and 4 blocks
