"""Smoke test of bench/speed.py at toy sizes: it runs end to end and writes a complete JSON. Nothing is timed here."""

import json
import math

import pytest
import torch

from tests.conftest import load_bench_script


@pytest.fixture(scope="module")
def speed():
    return load_bench_script("speed")


@pytest.fixture
def one_thread():
    # The script sets the thread count for the whole process: give the rest of the suite its own back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def positive_stats(stats: dict) -> bool:
    return all(math.isfinite(stats[key]) and stats[key] > 0 for key in ("median", "min", "max"))


def test_speed_script_writes_complete_json(speed, tmp_path, one_thread):
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--sizes", "tiny", "--threads", "1", "--repeats", "2", "--warmup", "1"]
    argv += ["--new-tokens", "4", "--prompt-lengths", "4", "16", "--overhead-new-tokens", "4", "--step-modes", "eager"]
    returned = speed.main([*argv, "--out", str(out)])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))  # what is written is what main returns

    assert {"date", "environment", "settings", "parameters", "checks", "train", "decode", "targets"} <= set(results)
    assert "overhead" in results and "generate" not in results  # the CPU default run; the GPU stages by name
    for key in ("device", "device_name", "threads", "torch", "transformers"):
        assert results["environment"][key]
    assert results["environment"]["threads"] == 1
    assert results["settings"]["sizes"] == "tiny" and results["settings"]["prompt_lengths"] == [4, 16]
    assert len(set(results["parameters"].values())) == 1  # same size on both sides of every ratio
    assert results["checks"]["max_loss_difference"] < 1e-4  # same weights, same loss

    train = results["train"]["fp32"]
    assert set(train["tokens_per_s"]) == set(speed.TRAIN_VARIANTS)
    for stats in train["tokens_per_s"].values():
        assert positive_stats(stats) and len(stats["values"]) == 2
    assert all(positive_stats(ratio) for ratio in train["ratios"].values())
    assert "ours_stateful/bare_fused_stateful" in train["ratios"]

    decode = results["decode"]
    for n in ("4", "16"):
        assert set(decode["ms_per_token"][n]) == set(speed.DECODE_VARIANTS)
        assert all(positive_stats(stats) for stats in decode["ms_per_token"][n].values())
        assert all(positive_stats(stats) for stats in decode["prefill_ms"][n].values())
    for key in ("generate@16/generate@4", "generate/bare_loop@4", "generate/bare_loop@16"):
        assert positive_stats(decode["ratios"][key])
    assert set(results["targets"]) == {
        "train ours/bare_fused",
        "train ours_stateful/bare_fused_stateful",
        "decode generate@16/generate@4",
        "decode generate/bare_loop@4",
        "decode generate/bare_loop@16",
        "overhead ours_generate/gpt2_generate",
        "overhead ours_generate/mamba_generate",
        "step 2x32 ours_fp32/bare_fp32",
        "step 2x32 ours_bf16/bare_bf16",
    }
    step = results["step"]["2x32"]  # the recipe's Trainer step against AWD's bare loop, interleaved
    names = {"ours_fp32", "ours_bf16", "bare_fp32", "bare_bf16", "word_language_model"}
    assert set(step["ms_per_step"]) == names
    assert all(positive_stats(stats) and len(stats["values"]) == 2 for stats in step["ms_per_step"].values())
    assert {"ours_bf16/ours_fp32", "bare_bf16/bare_fp32", "ours_fp32/word_language_model"} <= set(step["ratios"])
    overhead = results["overhead"]
    assert set(overhead["ms_per_token"]) == {
        "ours_generate",
        "ours_generate_static",
        "bare_loop",
        "gpt2_generate",
        "mamba_generate",
    }
    assert all(positive_stats(stats) for stats in overhead["ms_per_token"].values())


def test_issue14_measurements_write_their_rows(speed, tmp_path, one_thread):
    """The GPU stage's measurements (generate matrix, GPT-2 124M, memory, larger training) at toy sizes on the CPU:
    compiled variants and peak memory are CUDA-only and are marked as such."""
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--sizes", "tiny", "--threads", "1", "--repeats", "1", "--warmup", "1"]
    argv += ["--new-tokens", "3", "--only", "generate", "gpt2", "memory", "train_large", "--out", str(out)]
    results = json.loads(json.dumps(speed.main(argv)))
    assert json.loads(out.read_text()) == results
    assert not results["generate"]["compiled"]
    assert set(results["generate"]["ms_per_token"]) == {
        f"batch{batch}_{mode}" for batch in (1, 4) for mode in ("greedy", "sampling")
    }
    assert "batch1_greedy generate_static/bare_loop" in results["generate"]["ratios"]
    assert positive_stats(results["gpt2"]["ratios"]["ours_generate_static/gpt2_generate"])
    assert "skipped" in results["memory"]
    (row,) = results["train_large"].values()
    assert positive_stats(row["fp32"]["ours/bare_fused"])
    assert set(results["seconds"]) == {"generate", "gpt2", "memory", "train_large"}
    assert "gpt2 tokens/s ours_generate_static/gpt2_generate" in results["targets"]


def test_compare_pairs_repeats(speed):
    ratio = speed.compare([2.0, 4.0, 9.0], [1.0, 4.0, 3.0])
    assert ratio["median"] == 2.0 and ratio["min"] == 1.0 and ratio["max"] == 3.0
    assert ratio["ratio_of_medians"] == pytest.approx(4.0 / 3.0)
    assert speed.rotated(("a", "b", "c"), 1) == ["b", "c", "a"]


def test_a_step_worker_that_fails_names_itself_and_shows_its_log(speed, tmp_path):
    """Each step variant runs in a process of its own: when one dies, the bench says which and why, instead of
    waiting on its pipe for ever."""
    spec = {"name": "ours_fp32", "kind": "ours", "precision": "fp32", "compiled": False, "corpus": "missing.txt"}
    spec.update(width=8, steps=3, chunk=1, threads=1, seed=0, out_dir=str(tmp_path / "ours"))
    worker = speed.StepWorker(spec)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)step worker ours_fp32 exited with 1:.*missing\.txt"):
            worker.read()
    finally:
        worker.close()
