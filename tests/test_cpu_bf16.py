"""bf16 mixed precision on the CPU (issue 24): `--bf16 auto` by default, bf16 training that tracks fp32, fp32 weights,
fp32 evaluations and reported perplexities, resume from a bf16 checkpoint."""

import csv
import json
import logging

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.data import group_into_blocks
from rnn_lm_hf.trainer import full_precision
from rnn_lm_hf.training import train_clm
from rnn_lm_hf.training.scaffold import start_run
from tests.conftest import CELL_TYPES, make_config
from tests.test_train_clm import corpus, tiny_run_args, trainer_for  # noqa: F401 (the corpus fixture)


def parse(tmp_path, *flags: str):
    (tmp_path / "train.txt").write_text("the keys to the cabinet are here .\n")
    return train_clm.parse_arguments(
        ["--train_file", str(tmp_path / "train.txt"), "--output_dir", str(tmp_path), *flags]
    )


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    return monkeypatch


@pytest.mark.parametrize("native", [True, False])
def test_auto_chooses_bf16_only_on_a_cpu_with_native_bf16(tmp_path, cpu_only, native, caplog):
    cpu_only.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    _, _, training_args, run_args = parse(tmp_path)  # nothing said about precision: `--bf16 auto`
    assert training_args.bf16 is native and training_args.mixed_precision == ("bf16" if native else "no")
    assert training_args.use_cpu is native  # Trainer refuses bf16 without a GPU unless told it trains on the CPU
    with caplog.at_level(logging.INFO, logger="rnn_lm_hf.training.scaffold"):
        start_run(training_args, run_args)
    said = [record.getMessage() for record in caplog.records if "bf16" in record.getMessage()]
    assert said == [
        "bf16 mixed precision: this CPU computes bf16 natively (--bf16 false trains in fp32)"
        if native
        else "fp32: this CPU has no native bf16, and emulated bf16 is slower than fp32 (--bf16 true uses it anyway)"
    ]


def test_what_the_user_says_wins_over_auto(tmp_path, cpu_only):
    cpu_only.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert parse(tmp_path, "--bf16", "false")[2].bf16 is False
    assert parse(tmp_path, "--bf16", "false")[3].precision_note is None
    assert parse(tmp_path, "--fp16", "false")[2].bf16 is False  # a precision named: no automatic choice
    cpu_only.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert parse(tmp_path, "--bf16", "true", "--use_cpu", "true")[2].bf16 is True  # forced on emulated bf16
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"bf16": "auto", "output_dir": str(tmp_path)}))
    flags = ["--train_file", str(tmp_path / "train.txt")]
    assert train_clm.parse_arguments([str(recipe), *flags])[2].bf16 is False
    assert train_clm.parse_arguments([str(recipe), *flags, "--bf16", "true", "--use_cpu", "true"])[2].bf16 is True
    cpu_only.setattr(torch.accelerator, "is_available", lambda: True)  # a GPU: auto keeps Trainer's fp32 default
    _, _, training_args, run_args = parse(tmp_path, "--bf16", "auto")
    assert training_args.bf16 is False and run_args.precision_note is None


def run(corpus, output_dir, precision: str, *extra: str) -> dict:  # noqa: F811
    """A tiny LM run of one precision, stateful, with the regularisation of the AWD recipes."""
    return train_clm.main(
        tiny_run_args(
            corpus,
            output_dir,
            "--bf16",
            str(precision == "bf16").lower(),
            "--num_samples",
            "0",
            "--logging_steps",
            "25",
            *extra,
        )  # fmt: skip
    )


def logged_losses(output_dir) -> list[float]:
    with (output_dir / "training_log.csv").open() as handle:
        return [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "loss"]


# Tolerance of the bf16 run against the fp32 one: the mean training loss of each 25-step window within 2% (the loss
# falls from about 3.6 to 1.2 nats over the run). bf16 rounds every matrix product's inputs to 8 bits of mantissa,
# so the two runs drift apart slowly; a loss computed from bf16 logits, or a bf16 state, shows far larger gaps.
LOSS_TOLERANCE = 0.02


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_bf16_training_loss_tracks_fp32_for_every_cell(tmp_path, corpus, cell):  # noqa: F811
    overrides = f"hidden_size=32,num_hidden_layers=2,cell_type={cell},dropout_hidden=0.1,weight_drop=0.1"
    flags = ["--max_steps", "200", "--config_overrides", overrides, "--eval_strategy", "no"]
    flags += ["--activation_regularization", "1", "--temporal_activation_regularization", "1"]
    fp32 = run(corpus, tmp_path / "fp32", "fp32", *flags)
    bf16 = run(corpus, tmp_path / "bf16", "bf16", *flags)
    losses = {name: logged_losses(tmp_path / name) for name in ("fp32", "bf16")}
    assert len(losses["fp32"]) == 8 and losses["fp32"][-1] < 0.9 * losses["fp32"][0]  # it learnt
    for step, (a, b) in enumerate(zip(losses["fp32"], losses["bf16"])):
        assert abs(b - a) <= LOSS_TOLERANCE * a, f"window {step}: fp32 {a}, bf16 {b}"
    assert bf16["test_perplexity"] == pytest.approx(fp32["test_perplexity"], rel=0.05)
    assert losses["fp32"] != losses["bf16"]  # the bf16 run really computed in bf16


def test_bf16_run_saves_fp32_and_reports_fp32_perplexities(tmp_path, corpus, capsys):  # noqa: F811
    """Weights and optimizer state stay fp32; the reported perplexities are fp32 ones, what `rnn-lm evaluate` gives,
    and not what the model computes under bf16 autocast."""
    from rnn_lm_hf.cli import evaluate_perplexity
    from rnn_lm_hf.cli import main as cli_main

    metrics = run(corpus, tmp_path, "bf16", "--max_steps", "30", "--save_strategy", "steps", "--save_steps", "30")
    assert json.loads((tmp_path / "run_info.json").read_text())["arguments"]["bf16"] is True
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        assert {saved.get_tensor(name).dtype for name in saved.keys()} == {torch.float32}  # noqa: SIM118
    optimizer = torch.load(tmp_path / "checkpoint-30" / "optimizer.pt", weights_only=True)
    assert {value.dtype for state in optimizer["state"].values() for value in state.values()} == {torch.float32}
    capsys.readouterr()
    assert cli_main(["evaluate", str(tmp_path), "--file", str(corpus / "test.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] == pytest.approx(metrics["test_perplexity"], rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same evaluation, computed in bf16
        in_bf16 = evaluate_perplexity(str(tmp_path), str(corpus / "test.txt"))["eval_perplexity"]
    assert in_bf16 != pytest.approx(metrics["test_perplexity"], rel=1e-4)  # so the check above can tell them apart


def test_resume_from_a_bf16_checkpoint_equals_the_uninterrupted_run(tmp_path, corpus):  # noqa: F811
    # A constant learning rate, so that the run cut short after its first checkpoint had the same schedule.
    common = ["--max_steps", "16", "--save_strategy", "steps", "--save_steps", "8", "--eval_strategy", "no"]
    common += ["--lr_scheduler_type", "constant"]
    run(corpus, tmp_path / "full", "bf16", *common)
    run(corpus, tmp_path / "cut", "bf16", *common[:1], "8", *common[2:])  # stops after the first checkpoint
    run(corpus, tmp_path / "cut", "bf16", *common, "--resume_from_checkpoint", "auto")
    full = RNNLMForCausalLM.from_pretrained(tmp_path / "full").state_dict()
    resumed = RNNLMForCausalLM.from_pretrained(tmp_path / "cut").state_dict()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)


def test_evaluation_inside_bf16_training_and_the_trained_model_are_fp32(tmp_path):
    """accelerate wraps the model's forward in bf16 autocast for training (our trainers drop its fp32 conversion of
    the outputs); `full_precision` (every evaluation) calls the plain forward, and once `train` returns the model is
    plain again."""
    model = RNNLMForCausalLM(make_config(dropout=0.0))
    inputs = torch.randint(3, 99, (2, 12))

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                self.fp32 = type(model).forward(model, inputs).logits  # the class's own forward
                self.wrapped = model(inputs).logits
                with full_precision(model, args):
                    self.evaluated = model(inputs).logits

    probe = Probe()
    blocks = group_into_blocks(torch.randint(3, 99, (400,)).tolist(), 10, 0)
    trainer = trainer_for(model, tmp_path, bf16=True, max_steps=2, per_device_train_batch_size=4)
    trainer.train_dataset = blocks
    trainer.add_callback(probe)
    trainer.train()
    # Training steps compute in bf16, and their outputs stay bf16: no fp32 copy of the logits that nothing reads.
    assert probe.wrapped.dtype == torch.bfloat16 and not torch.equal(probe.wrapped.float(), probe.fp32)
    torch.testing.assert_close(probe.evaluated, probe.fp32, rtol=0, atol=0)
    assert "forward" not in model.__dict__ and "_original_forward" not in model.__dict__
    with torch.no_grad():
        torch.testing.assert_close(model(inputs).logits, type(model).forward(model, inputs).logits, rtol=0, atol=0)


@pytest.mark.parametrize("head", ["tagger_crf", "classifier"])
def test_bf16_tagger_with_crf_and_classifier_train_as_fp32_does(tmp_path, head):
    """The heads' scripts under bf16: the training loss tracks fp32, and evaluations are fp32 (the CRF's forward
    algorithm runs in fp32 under autocast too)."""
    from tests import test_train_sequence_classification as classification
    from tests import test_train_token_classification as tagging

    if head == "tagger_crf":
        script, args = tagging.script, tagging.ner_args
        overrides = f"{tagging.TINY_MODEL},use_crf=true"
        extra = ["--max_steps", "60", "--learning_rate", "0.05", "--logging_steps", "20"]
    else:
        script, overrides = classification.script, classification.TINY_MODEL
        files = ["--train_file", classification.SENTIMENT / "train.tsv"]
        files += ["--validation_file", classification.SENTIMENT / "dev.tsv", "--test_file"]
        files += [classification.SENTIMENT / "test.jsonl"]

        def args(folder, *flags):
            command = [
                *files,
                "--output_dir",
                folder,
                "--do_train",
                "--do_eval",
                "--do_predict",
                *classification.COMMON,
            ]
            return [str(part) for part in [*command, *flags]]

        extra = ["--max_steps", "30", "--logging_steps", "10"]
    metrics = {
        precision: script.main(
            args(tmp_path / precision, "--config_overrides", overrides, "--bf16", str(precision == "bf16"), *extra)
        )
        for precision in ("fp32", "bf16")
    }
    losses = {
        precision: [
            entry["loss"]
            for entry in json.loads((tmp_path / precision / "trainer_state.json").read_text())["log_history"]
            if "loss" in entry
        ]
        for precision in metrics
    }
    assert len(losses["fp32"]) == 3 and losses["fp32"] != losses["bf16"]
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(b - a) <= 0.05 * a + 0.01
    assert metrics["bf16"]["eval_loss"] == pytest.approx(metrics["fp32"]["eval_loss"], rel=0.05, abs=0.01)
