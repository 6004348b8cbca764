"""Training loses nothing and starts sensibly: failed checkpoint writes, non-finite losses, defaults, threads."""

import csv
import errno
import functools
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import TrainingArguments, default_data_collator

from rnn_lm_hf import RNNLMForCausalLM, RNNLMForTokenClassification
from rnn_lm_hf.data import group_into_blocks
from rnn_lm_hf.trainer import (
    CheckpointWriteError,
    CSVLogCallback,
    GradientHealthCallback,
    NonFiniteLossError,
    RNNLMTrainer,
    last_complete_checkpoint,
)
from rnn_lm_hf.training import scaffold, train_token_classification
from rnn_lm_hf.training.scaffold import (
    CLM_DEFAULTS,
    FINETUNE_DEFAULTS,
    RunArguments,
    apply_run_arguments,
    default_threads,
    parse_script_args,
    set_threads,
)
from tests.conftest import make_config


NER = Path(__file__).resolve().parent / "fixtures" / "ner"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def lm_trainer(output_dir: Path, callbacks=(), **overrides) -> RNNLMTrainer:
    """A 16-unit LSTM LM on random blocks: 4 rows a step, a checkpoint every 2 steps, only the newest kept."""
    torch.manual_seed(0)
    model = RNNLMForCausalLM(make_config(hidden_size=16, num_hidden_layers=1))
    blocks = group_into_blocks(torch.randint(3, 99, (400,)), block_size=10)
    settings = {
        "output_dir": str(output_dir),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "save_strategy": "steps",
        "save_steps": 2,
        "save_total_limit": 1,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "remove_unused_columns": False,
    }
    args = TrainingArguments(**{**settings, **overrides})
    return RNNLMTrainer(
        model=model,
        args=args,
        train_dataset=blocks,
        data_collator=default_data_collator,
        callbacks=list(callbacks),
    )


def full_disk(target: str):
    def fail(*args, **kwargs):
        path = str(kwargs.get("save_directory") or kwargs.get("path") or args[-1])
        if "checkpoint-4" in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original[target](*args, **kwargs)

    return fail


original = {}


@pytest.mark.parametrize("target", ["weights", "carried state"])
def test_failed_checkpoint_write_is_one_clear_error_and_keeps_the_previous_one(tmp_path, monkeypatch, target):
    if target == "weights":  # inside Trainer's own save, after which it used to rotate old checkpoints away
        original[target] = RNNLMForCausalLM.save_pretrained
        monkeypatch.setattr(RNNLMForCausalLM, "save_pretrained", full_disk(target))
    else:  # after Trainer's save, before the completion marker
        import rnn_lm_hf.trainer as trainer_module

        original[target] = trainer_module.atomic_torch_save
        monkeypatch.setattr(trainer_module, "atomic_torch_save", full_disk(target))
    with pytest.raises(CheckpointWriteError) as error:
        lm_trainer(tmp_path).train()
    message = str(error.value)
    assert "\n" not in message
    assert "could not write checkpoint" in message and "checkpoint-4" in message
    assert "No space left on device" in message and "checkpoint-2 is complete" in message
    # save_total_limit=1 must not have deleted the last complete checkpoint before the new one was complete.
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")

    monkeypatch.undo()
    resumed = lm_trainer(tmp_path)
    result = resumed.train(resume_from_checkpoint=last_complete_checkpoint(tmp_path))
    assert result.global_step == 4 and last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-2").exists()  # rotated once checkpoint-4 was complete


def nan_on_call(model, call: int):
    """Make the `call`-th forward pass produce NaN activations (so a NaN loss and NaN gradients)."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == call else output

    return model.model.embeddings.register_forward_hook(hook)


def test_nonfinite_loss_stops_before_the_update(tmp_path):
    trainer = lm_trainer(tmp_path, [GradientHealthCallback("stop")], save_strategy="no")
    nan_on_call(trainer.model, 3)
    with pytest.raises(NonFiniteLossError, match="NaN/inf at step 3.*--on_nonfinite skip"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nonfinite_loss_skips_the_step_when_asked(tmp_path):
    health = GradientHealthCallback("skip")
    trainer = lm_trainer(tmp_path, [health, CSVLogCallback(tmp_path / "log.csv")], save_strategy="no", max_steps=5)
    nan_on_call(trainer.model, 3)
    result = trainer.train()
    assert result.global_step == 5 and health.nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with (tmp_path / "log.csv").open() as handle:
        counts = [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "nonfinite_steps"]
    assert counts == [0, 0, 1, 1, 1]


def test_scripts_stop_on_a_nonfinite_loss_with_one_line(tmp_path, monkeypatch, capsys):
    forward = RNNLMForTokenClassification.forward

    @functools.wraps(forward)  # Trainer keeps the dataset columns the signature names
    def nan_forward(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if output.loss is not None:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(RNNLMForTokenClassification, "forward", nan_forward)
    argv = ["--train_file", str(NER / "train.conll"), "--output_dir", str(tmp_path), "--do_train", "--max_steps", "2"]
    monkeypatch.setattr(sys, "argv", ["train_token_classification.py", *argv, *COMMON])
    assert train_token_classification.cli() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1].startswith("error: the training loss or its gradients became NaN/inf at step 1")
    )
    with pytest.raises(ValueError, match="--on_nonfinite must be one of stop, skip, got 'ignore'"):
        RunArguments(on_nonfinite="ignore")


# ----- defaults for training from scratch -----


def parse(argv, defaults=FINETUNE_DEFAULTS) -> TrainingArguments:
    _, training_args = parse_script_args((RunArguments, TrainingArguments), argv, defaults)
    return training_args


def test_script_defaults_apply_only_to_options_not_given(tmp_path):
    assert (parse(["--output_dir", "x"]).learning_rate, parse(["--output_dir", "x"]).logging_steps) == (5e-3, 10)
    assert parse(["--output_dir", "x"], CLM_DEFAULTS).learning_rate == 2e-3
    assert parse(["--output_dir", "x", "--learning_rate", "5e-5"]).learning_rate == 5e-5
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"output_dir": "x", "learning_rate": 5e-5}))
    assert parse([str(config)]).learning_rate == 5e-5  # a config-file key is given too
    assert parse([str(config), "--logging_steps", "3"]).learning_rate == 5e-5
    config.write_text(json.dumps({"output_dir": "x"}))
    assert parse([str(config)]).learning_rate == 5e-3 and parse([str(config), "--seed", "1"]).learning_rate == 5e-3


def test_help_states_the_script_defaults(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.005)" in text and "--threads" in text and "--on_nonfinite" in text


def test_a_tagger_learns_without_a_learning_rate(tmp_path):
    """The issue's case: 40 steps on the easy NER fixture, no --learning_rate (Trainer's 5e-5 reached F1 0.0-0.36)."""
    files = ["--train_file", NER / "train.conll", "--validation_file", NER / "dev.conll"]
    argv = [*files, "--output_dir", tmp_path, "--do_train", "--do_eval", "--max_steps", "40", *COMMON]
    metrics = train_token_classification.main([str(a) for a in argv])
    assert metrics["eval_f1"] >= 0.8
    arguments = json.loads((tmp_path / "run_info.json").read_text())["arguments"]
    assert (arguments["learning_rate"], arguments["logging_steps"]) == (5e-3, 10)


# ----- threads and pinned memory -----


def test_default_threads_honour_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert default_threads() == 1  # a busy 2-core machine: one thread, not two fighting over both cores
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_threads() == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only machine without --use_cpu is the case")
def test_threads_option_and_cpu_runs_without_pinned_memory(tmp_path, monkeypatch):
    assert set_threads(2) == 2 and torch.get_num_threads() == 2
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")  # no --use_cpu: the device decides
    assert args.dataloader_pin_memory and args.device.type == "cpu"
    calls = []
    monkeypatch.setattr(scaffold, "reuse_freed_memory", lambda: calls.append("reuse") or True)
    apply_run_arguments(RunArguments(threads=1), args)
    assert torch.get_num_threads() == 1 and not args.dataloader_pin_memory and calls == ["reuse"]
    apply_run_arguments(RunArguments(threads=1, reuse_freed_memory=False), args)
    assert calls == ["reuse"]
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        RunArguments(threads=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is the case")
def test_reuse_freed_memory_stops_each_step_faulting_its_buffers_in_again():
    """After `reuse_freed_memory()`, a large tensor allocated and freed again and again (a step's logits) reuses the
    same pages instead of page-faulting fresh ones in every time, as glibc's default does above its mmap threshold."""
    script = """
import resource, torch
from rnn_lm_hf.training.scaffold import reuse_freed_memory
def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(2**24).fill_(1.0)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
before = faults()
applied = reuse_freed_memory()
faults()  # the heap grows once
print(applied, before, faults())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    applied, before, after = result.stdout.split()
    if applied != "True":
        pytest.skip("this C library has no glibc mallopt")
    assert int(before) > 10 * 2**24 * 4 // 4096 // 2  # each round faulted most of its 16,384 pages in
    assert int(after) < int(before) // 20


def test_resuming_a_tied_lm_reports_no_missing_head(tmp_path):
    """The tied `lm_head.weight` is saved once, as the embeddings: resuming re-ties it instead of warning that the
    checkpoint lacks it. Needs RNNLMTrainer._issue_warnings_after_load to skip tied keys (see the hardening report)."""
    lm_trainer(tmp_path, max_steps=2).train()
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")  # it does not propagate to the root logger
    transformers_logger.addHandler(handler)
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_warning()  # other tests' scripts may have raised it
    try:
        trainer = lm_trainer(tmp_path)
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(tmp_path))
    finally:
        transformers_logger.removeHandler(handler)
        transformers.utils.logging.set_verbosity(verbosity)
    assert not [record.getMessage() for record in records if "missing keys" in record.getMessage()]
    model = trainer.model
    assert model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr()


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.3])  # unclipped norms here: 0.16 to 0.74
def test_clipped_share_matches_the_pre_clip_norm(tmp_path, max_grad_norm):
    trainer = lm_trainer(
        tmp_path,
        [GradientHealthCallback("stop"), CSVLogCallback(tmp_path / "log.csv")],
        save_strategy="no",
        max_steps=8,
        max_grad_norm=max_grad_norm,
        learning_rate=0.3,
    )
    trainer.train()
    with (tmp_path / "log.csv").open() as handle:
        rows = [(int(row["step"]), row["name"], float(row["value"])) for row in csv.DictReader(handle)]
    norms = {step: value for step, name, value in rows if name == "grad_norm"}
    shares = {step: value for step, name, value in rows if name == "clipped_share"}
    if max_grad_norm == 0:  # no clipping: nothing to report
        assert not shares and len(norms) == 8
        return
    # One step per log: the share is 1 exactly when Trainer's logged pre-clip norm exceeded the limit.
    assert shares == {step: float(norm > max_grad_norm) for step, norm in norms.items()}
    assert set(shares.values()) == {0.0, 1.0}


def test_clipped_share_is_a_fraction_of_the_steps_since_the_last_log(tmp_path):
    health = GradientHealthCallback("stop")
    callbacks = [health, CSVLogCallback(tmp_path / "log.csv")]
    settings = {"save_strategy": "no", "max_steps": 6, "logging_steps": 3, "learning_rate": 0.3}
    lm_trainer(tmp_path, callbacks, max_grad_norm=0.3, **settings).train()
    with (tmp_path / "log.csv").open() as handle:
        shares = [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "clipped_share"]
    # Two logs of three steps each: shares in thirds, here some steps clipped and some not (norms 0.16 to 0.74).
    assert len(shares) == 2 and all(abs(3 * share - round(3 * share)) < 1e-3 for share in shares)
    assert 0 < min(shares) < 1
    assert (health.steps, health.clipped_steps) == (0, 0)  # reset at each log
