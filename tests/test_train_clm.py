"""Language-model training: stateful truncated BPTT, perplexity, the script end to end, resume, 2 processes, errors."""

import csv
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import TrainingArguments, default_data_collator

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.data import StreamSegments, group_into_blocks
from rnn_lm_hf.demo_corpus import generate_corpus
from rnn_lm_hf.trainer import COMPLETE_MARKER, RNNLMTrainer, last_complete_checkpoint
from rnn_lm_hf.training import train_clm
from tests.conftest import make_config


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "train_clm.py"


def trainer_for(model, tmp_path, **overrides):
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False, **overrides
    )
    return RNNLMTrainer(model=model, args=args, data_collator=default_data_collator)


def long_forward_nll(model, stream: torch.Tensor, segments: StreamSegments) -> tuple[float, int]:
    """Sum of NLL when every stream runs as ONE forward pass, the reference for carried states."""
    total, count, start = 0.0, 0, 1
    for length in segments.stream_lengths:
        inputs = stream[start - 1 : start - 1 + length][None]
        targets = stream[start : start + length][None]
        logits = model(inputs).logits
        total += torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="sum").item()
        count += length
        start += length
    return total, count


@torch.no_grad()
def test_carried_state_equals_one_long_forward(tmp_path, cell_type):
    model = RNNLMForCausalLM(make_config(cell_type)).eval()
    stream = torch.randint(3, 99, (203,))
    segments = StreamSegments(stream, bptt=7, per_device_batch_size=3)
    reference, count = long_forward_nll(model, stream, segments)

    # Through the training path (compute_loss carries the state), with no optimizer step in between.
    trainer = trainer_for(model, tmp_path, per_device_eval_batch_size=3, per_device_train_batch_size=3)
    total = 0.0
    for batch in DataLoader(segments, batch_size=3, collate_fn=default_data_collator):
        tokens = int((batch["shift_labels"] != -100).sum())
        total += trainer.compute_loss(model, batch).item() * tokens
    assert total == pytest.approx(reference, rel=1e-5)

    # Through stream evaluation: exp(total NLL / tokens).
    metrics = trainer.evaluate(segments)
    assert metrics["eval_tokens"] == count == len(stream) - 1
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(reference / count), rel=1e-5)


@torch.no_grad()
def test_stateful_batches_pass_the_mask_only_where_a_window_is_padded(tmp_path):
    """An all-ones mask is dropped before the model call, so a compiled forward has no data-dependent branch on it;
    a stream's padded last window keeps its mask."""
    model = RNNLMForCausalLM(make_config()).eval()
    segments = StreamSegments(torch.randint(3, 99, (203,)), bptt=7, per_device_batch_size=3)
    trainer = trainer_for(model, tmp_path, per_device_eval_batch_size=3, per_device_train_batch_size=3)
    masks, forward = [], model.forward

    def spy(*args, **kwargs):
        masks.append(kwargs.get("attention_mask"))
        return forward(*args, **kwargs)

    model.forward = spy
    batches = list(DataLoader(segments, batch_size=3, collate_fn=default_data_collator))
    padded = [not bool(batch["attention_mask"].all()) for batch in batches]
    for batch in batches:
        trainer.compute_loss(model, batch)
    assert padded[-1] and not any(padded[:-1])
    assert [mask is not None for mask in masks] == padded


@torch.no_grad()
def test_block_perplexity_is_token_weighted(tmp_path):
    model = RNNLMForCausalLM(make_config()).eval()
    stream = torch.randint(3, 99, (53,))
    blocks = group_into_blocks(stream, block_size=10)  # the last block is short: 2 of its 10 positions are real
    total, count = 0.0, 0
    for block in blocks:
        real = block["attention_mask"].bool()
        logits = model(block["input_ids"][real][None]).logits[0]
        total += torch.nn.functional.cross_entropy(logits, block["shift_labels"][real], reduction="sum").item()
        count += int(real.sum())
    metrics = trainer_for(model, tmp_path, per_device_eval_batch_size=2).evaluate(blocks)
    assert count == 52 and metrics["eval_tokens"] == 52
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # The mean of per-batch losses (what plain Trainer.evaluate reports) would differ with uneven batches.
    assert metrics["eval_loss"] == pytest.approx(total / count, rel=1e-5)


def test_out_of_order_stateful_batches_are_refused(tmp_path):
    model = RNNLMForCausalLM(make_config())
    segments = StreamSegments(torch.randint(3, 99, (100,)), bptt=5, per_device_batch_size=2)
    batches = list(DataLoader(segments, batch_size=2, collate_fn=default_data_collator))
    trainer = trainer_for(model, tmp_path, per_device_train_batch_size=2)
    trainer.compute_loss(model, dict(batches[0]))
    with pytest.raises(RuntimeError, match="out of order"):
        trainer.compute_loss(model, dict(batches[2]))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    sentences = generate_corpus(700, seed=3)
    (folder / "train.txt").write_text("\n".join(sentences[:600]) + "\n")
    (folder / "valid.txt").write_text("\n".join(sentences[600:650]) + "\n")
    (folder / "test.txt").write_text("\n".join(sentences[650:]) + "\n")
    return folder


def tiny_run_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_file", str(corpus / "train.txt"), "--validation_file", str(corpus / "valid.txt"),
        "--test_file", str(corpus / "test.txt"), "--output_dir", str(output_dir), "--do_train", "True",
        "--config_overrides", "hidden_size=32,num_hidden_layers=2", "--block_size", "10",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--learning_rate", "0.01",
        "--optim", "adamw_torch", "--report_to", "none", "--use_cpu", "True", "--seed", "7",
        "--disable_tqdm", "True", "--num_samples", "1", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("stateful", ["True", "False"])
def test_train_clm_end_to_end(tmp_path, corpus, stateful, capsys):
    metrics = train_clm.main(tiny_run_args(corpus, tmp_path, "--max_steps", "6", "--stateful", stateful))
    for split in ("eval", "test"):
        assert 1 < metrics[f"{split}_perplexity"] < 200 and metrics[f"{split}_tokens"] > 0
    saved = {path.name for path in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_rnn_lm.py", "tokenizer.json", "run_info.json"} <= saved
    assert {"all_results.json", "training_log.csv", "generation_config.json"} <= saved
    out = capsys.readouterr().out
    assert "[sample]" in out and "[result] perplexity" in out


def test_reported_perplexities_are_what_rnn_lm_evaluate_gives(tmp_path, corpus, capsys):
    """The run's final validation and test perplexities are ONE stream carried over the split, exactly what `rnn-lm
    evaluate MODEL --file F` gives with its defaults (bptt: the run's block_size), though the run evaluates with 2
    parallel streams per batch; the evaluation during training keeps those (faster) streams."""
    from rnn_lm_hf.cli import evaluate_perplexity
    from rnn_lm_hf.cli import main as cli_main

    args = tiny_run_args(corpus, tmp_path, "--max_steps", "6", "--eval_strategy", "steps", "--eval_steps", "6")
    metrics = train_clm.main([*args, "--num_samples", "0"])
    assert args[args.index("--per_device_eval_batch_size") + 1] == "2"
    capsys.readouterr()
    for split, prefix in (("valid", "eval"), ("test", "test")):
        assert cli_main(["evaluate", str(tmp_path), "--file", str(corpus / f"{split}.txt")]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["perplexity"] == pytest.approx(metrics[f"{prefix}_perplexity"], rel=1e-6, abs=0)
        assert result["tokens"] == metrics[f"{prefix}_tokens"]
    # Two parallel streams, what the run used to report, lose context at the second stream's start: another number.
    two_streams = evaluate_perplexity(str(tmp_path), str(corpus / "valid.txt"), batch_size=2)["eval_perplexity"]
    assert two_streams != pytest.approx(metrics["eval_perplexity"], rel=1e-6, abs=0)
    with (tmp_path / "training_log.csv").open() as handle:
        logged = [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "eval_perplexity"]
    assert logged == [pytest.approx(two_streams, rel=1e-5), pytest.approx(metrics["eval_perplexity"], rel=1e-6)]
    assert "one stream" in json.loads((tmp_path / "run_info.json").read_text())["evaluation_protocol"]


@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_csv_and_jsonl_train_with_their_text_column(tmp_path, corpus, extension):
    """`--text_column sentence` reaches the tokenization of every split (it used to end in "No column 'text'")."""
    lines = (corpus / "train.txt").read_text().splitlines()
    splits = {"train": lines[:300], "valid": lines[300:340]}
    for split, texts in splits.items():
        path = tmp_path / f"{split}.{extension}"
        if extension == "csv":
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "sentence"])
                writer.writerows(enumerate(texts))
        else:
            path.write_text("".join(json.dumps({"id": i, "sentence": text}) + "\n" for i, text in enumerate(texts)))
    args = tiny_run_args(corpus, tmp_path / "out", "--max_steps", "2", "--text_column", "sentence")
    args[args.index("--train_file") + 1] = str(tmp_path / f"train.{extension}")
    args[args.index("--validation_file") + 1] = str(tmp_path / f"valid.{extension}")
    test = args.index("--test_file")
    del args[test : test + 2]
    metrics = train_clm.main([*args, "--num_samples", "0"])
    # Word tokens plus <eos> per line; all but the first are predicted (one stream).
    assert metrics["eval_tokens"] == sum(len(text.split()) + 1 for text in splits["valid"]) - 1
    assert 1 < metrics["eval_perplexity"] < 200


def test_sgd_epoch_decay_schedule(tmp_path, corpus):
    train_clm.main(
        tiny_run_args(corpus, tmp_path, "--num_train_epochs", "3", "--optim", "sgd", "--learning_rate", "1.0",
                      "--lr_scheduler_type", "constant", "--lr_decay", "0.5", "--lr_decay_start_epoch", "2",
                      "--logging_steps", "1", "--per_device_train_batch_size", "8", "--block_size", "30")
    )  # fmt: skip
    by_epoch: dict[int, set] = {}
    with (tmp_path / "training_log.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["name"] == "learning_rate":
                by_epoch.setdefault(math.ceil(float(row["epoch"]) - 1e-9), set()).add(float(row["value"]))
    assert by_epoch == {1: {1.0}, 2: {1.0}, 3: {0.5}}


def run_script(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in RNNLMForCausalLM.from_pretrained(folder).state_dict().items()}


def test_killed_run_resumes_with_same_data_order_and_state(tmp_path, corpus):
    common = ["--max_steps", "24", "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy", "no"]
    uninterrupted = run_script(tiny_run_args(corpus, tmp_path / "full", *common))
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stdout.read()[-3000:]

    # Kill the run (SIGKILL, no clean-up) once a checkpoint has been completed, then resume from it.
    killed_dir = tmp_path / "killed"
    run = run_script(tiny_run_args(corpus, killed_dir, *common, "--logging_steps", "1"))
    deadline = time.time() + 300
    while last_complete_checkpoint(killed_dir) is None and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    run.kill()
    run.wait()
    checkpoint = last_complete_checkpoint(killed_dir)
    assert checkpoint is not None and (Path(checkpoint) / COMPLETE_MARKER).is_file()
    assert (Path(checkpoint) / "rnn_state_0.pt").is_file()  # the carried hidden state
    # A half-written checkpoint (a kill during the save) is never resumed from.
    half_written = killed_dir / "checkpoint-999"
    shutil.copytree(checkpoint, half_written)
    (half_written / COMPLETE_MARKER).unlink()
    assert last_complete_checkpoint(killed_dir) == checkpoint

    resumed = run_script(tiny_run_args(corpus, killed_dir, *common, "--resume_from_checkpoint", "auto"))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    full, again = final_weights(tmp_path / "full"), final_weights(killed_dir)
    for name in full:
        torch.testing.assert_close(again[name], full[name], rtol=0, atol=1e-6, msg=name)


def checksums(output: str) -> dict[int, float]:
    # The two processes share one pipe, so another process's output can follow a number without a newline.
    return {
        int(rank): float(value)
        for rank, value in re.findall(r"\[replica (\d+)/\d+\] parameter checksum ([-+]?[0-9.]+e[-+][0-9]+)", output)
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_match_one_process(tmp_path, corpus):
    """accelerate launch --num_processes 2 --cpu: replicas stay identical, and the loss follows a single process
    with the same global batch (each process owns its own streams: 2 x 2 streams == 1 x 4 streams)."""
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate CLI not installed")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    common = ["--max_steps", "8", "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [accelerate, "launch", "--config_file", str(REPO / "training/configs/accelerate/cpu.yaml"),
         "--main_process_port", str(free_port()), str(SCRIPT),
         *tiny_run_args(corpus, tmp_path / "two", *common, "--per_device_train_batch_size", "2")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
    replicas = checksums(two.stdout + two.stderr)
    assert set(replicas) == {0, 1} and replicas[0] == replicas[1]

    one = run_script(tiny_run_args(corpus, tmp_path / "one", *common, "--per_device_train_batch_size", "4"))
    assert one.wait(timeout=300) == 0, one.stdout.read()[-3000:]
    assert not checksums(one.stdout.read())  # a single process has no replica to compare with
    single = sum(
        float(p.detach().double().abs().sum()) for p in RNNLMForCausalLM.from_pretrained(tmp_path / "one").parameters()
    )
    assert replicas[0] == pytest.approx(single, rel=1e-4)

    def losses(folder):
        with (folder / "training_log.csv").open() as handle:
            return [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "loss"]

    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-3)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "train_file"),
        ("empty", "empty"),
        ("no_text_column", "column"),
        ("latin1", "UTF-8"),
        ("block_too_big", "block"),
        ("vocab_mismatch", "resize_token_embeddings"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, corpus, case, message, capsys):
    train = corpus / "train.txt"
    extra: list[str] = []
    if case == "missing":
        train = tmp_path / "nope.txt"
    elif case == "empty":
        train = tmp_path / "empty.txt"
        train.write_text("")
    elif case == "no_text_column":
        train = tmp_path / "data.jsonl"
        train.write_text('{"sentence": "a b c"}\n{"sentence": "d e f"}\n')
    elif case == "latin1":
        train = tmp_path / "latin1.txt"
        train.write_bytes(b"un caf\xe9 noir\n" * 20)
    elif case == "block_too_big":
        extra = ["--block_size", "100000"]
    elif case == "vocab_mismatch":
        small = RNNLMForCausalLM(make_config(vocab_size=10))
        small.save_pretrained(tmp_path / "small")
        from rnn_lm_hf.tokenization import train_tokenizer

        train_tokenizer(train.read_text().splitlines()).save_pretrained(tmp_path / "tok")
        extra = ["--model_name_or_path", str(tmp_path / "small"), "--tokenizer_name", str(tmp_path / "tok")]
    args = tiny_run_args(corpus, tmp_path / "out", "--max_steps", "1", *extra)
    args[args.index("--train_file") + 1] = str(train)
    if case == "vocab_mismatch":
        args = [a for a in args if a != "--config_overrides" and a != "hidden_size=32,num_hidden_layers=2"]
    assert train_clm.cli(args) == 2
    stderr = capsys.readouterr().err
    error = [line for line in stderr.splitlines() if line.startswith("error: ")]  # progress bars aside
    assert "Traceback" not in stderr and len(error) == 1 and message in error[0], stderr[-2000:]
    if case in ("missing", "empty", "latin1", "no_text_column"):
        assert train.name in error[0]


def test_demo_runs_small(tmp_path, capsys):
    """The README's main job at reduced size: far below the vocabulary in perplexity, readable samples."""
    argv = [str(train_clm.DEMO_CONFIG), "--output_dir", str(tmp_path), "--demo_sentences", "3000",
            "--num_train_epochs", "2", "--disable_tqdm", "True", "--save_strategy", "no"]  # fmt: skip
    from rnn_lm_hf.cli import main

    assert main(["demo", *argv[1:]]) == 0
    out = capsys.readouterr().out
    samples = [line for line in out.splitlines() if line.startswith("[sample] ")]
    assert len(samples) == 3 and all(sample.split()[1] == "the" for sample in samples)
    results = __import__("json").loads((tmp_path / "all_results.json").read_text())
    vocab = len(__import__("transformers").AutoTokenizer.from_pretrained(tmp_path))
    assert results["test_perplexity"] < vocab / 5


def test_plot_training_curves(tmp_path):
    (tmp_path / "training_log.csv").write_text(
        "step,epoch,name,value\n10,0.5,loss,5.0\n20,1.0,loss,4.0\n20,1.0,eval_perplexity,60.0\n40,2.0,eval_perplexity,50.0\n"
    )
    from rnn_lm_hf.cli import main

    assert main(["plot", str(tmp_path)]) == 0
    png = (tmp_path / "training_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_schedule_over_the_time_budget_decays_to_zero_as_the_budget_ends(tmp_path, corpus):
    """`--lr_schedule_over_time`: a linear schedule whose progress is the elapsed part of --max_train_minutes, not of
    the 1000 epochs asked for (over those, it would barely move before the budget stops the run)."""
    train_clm.main(
        tiny_run_args(corpus, tmp_path, "--num_train_epochs", "1000", "--max_train_minutes", str(3 / 60),
                      "--lr_scheduler_type", "linear", "--lr_schedule_over_time", "True", "--logging_steps", "1",
                      "--eval_strategy", "no", "--save_strategy", "no", "--num_samples", "0")
    )  # fmt: skip
    with (tmp_path / "training_log.csv").open() as handle:
        rates = [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "learning_rate"]
    assert len(rates) > 20 and rates[0] > 0.009  # --learning_rate 0.01, from the first step
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))
    assert rates[-1] < 0.0005 and any(0.003 < rate < 0.007 for rate in rates)  # through the middle, down to ~0


def test_schedule_over_time_needs_a_time_budget(tmp_path, corpus):
    with pytest.raises(ValueError, match="set --max_train_minutes"):
        train_clm.main(tiny_run_args(corpus, tmp_path, "--lr_schedule_over_time", "True"))


def test_time_budget_stops_with_checkpoint_and_evaluation(tmp_path, corpus):
    budget_s = 1.0
    start = time.monotonic()
    metrics = train_clm.main(
        tiny_run_args(corpus, tmp_path, "--num_train_epochs", "1000", "--max_train_minutes", str(budget_s / 60),
                      "--eval_strategy", "steps", "--eval_steps", "1000000", "--save_strategy", "steps",
                      "--save_steps", "1000000", "--num_samples", "0")
    )  # fmt: skip
    # Step intervals far beyond the run: only the budget's stop can save or evaluate (epoch strategies would save
    # and evaluate at the cut-short epoch's end by themselves).
    assert time.monotonic() - start < 120  # 1000 epochs would take far longer
    checkpoint = last_complete_checkpoint(tmp_path)
    assert checkpoint is not None, "the budget's stop wrote no checkpoint"
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    assert 0 < state["epoch"] < 1000 and 0 < state["global_step"] < state["max_steps"]  # stopped by the budget
    # The checkpoint holds the step training ended on: the step of the run's last log rows (train summary, final
    # evaluations).
    with (tmp_path / "training_log.csv").open() as handle:
        last_step = max(int(row["step"]) for row in csv.DictReader(handle))
    assert state["global_step"] == last_step and Path(checkpoint).name == f"checkpoint-{last_step}"
    assert any("eval_loss" in entry and entry["step"] == state["global_step"] for entry in state["log_history"])
    assert metrics["eval_perplexity"] > 1
