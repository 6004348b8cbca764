"""AWD-LSTM training in the Trainer: AR/TAR, NT-ASGD (with resume) and variable-length BPTT."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, default_data_collator

from rnn_lm_hf import RNNLMForCausalLM
from rnn_lm_hf.data import StreamSegments
from rnn_lm_hf.nt_asgd import NTASGDCallback
from rnn_lm_hf.trainer import RNNLMTrainer, RNNLMTrainingArguments, last_complete_checkpoint
from tests.conftest import make_config
from tests.test_trainer import args


def stream(n=1200, seed=0):
    return np.random.default_rng(seed).integers(3, 40, n)


def training_args(tmp_path, **overrides):
    stateful = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 1, "remove_unused_columns": False}
    sgd = {"optim": "sgd", "learning_rate": 1.0, "lr_scheduler_type": "constant"}
    return args(tmp_path, RNNLMTrainingArguments, **{**stateful, **sgd, **overrides})


def tiny_trainer(tmp_path, variable_bptt=False, **overrides):
    torch.manual_seed(0)
    model = RNNLMForCausalLM(make_config("lstm", vocab_size=40, hidden_size=16))
    train = StreamSegments(stream(), 10, 4, variable_bptt=variable_bptt, seed=3)
    valid = StreamSegments(stream(300, seed=1), 10, 1)
    return RNNLMTrainer(
        model=model,
        args=training_args(tmp_path, **overrides),
        train_dataset=train,
        eval_dataset=valid,
        data_collator=default_data_collator,
    )


def test_ar_and_tar_equal_hand_computed_values(tmp_path):
    trainer = tiny_trainer(tmp_path, activation_regularization=2.0, temporal_activation_regularization=1.0)
    torch.manual_seed(1)
    dropped, raw = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    outputs = SimpleNamespace(last_hidden_state=dropped, hidden_states=(raw,))
    penalty = trainer.activation_penalties(outputs, mask, torch.tensor(0.0))
    ar_terms = [dropped[b, t, h] ** 2 for b in range(2) for t in range(4) for h in range(3) if mask[b, t]]
    tar_terms = [
        (raw[b, t, h] - raw[b, t - 1, h]) ** 2
        for b in range(2)
        for t in range(1, 4)
        for h in range(3)
        if mask[b, t] and mask[b, t - 1]
    ]
    expected = 2.0 * sum(ar_terms) / len(ar_terms) + 1.0 * sum(tar_terms) / len(tar_terms)
    torch.testing.assert_close(penalty, expected)


def test_ar_tar_are_logged_apart_and_perplexity_is_the_cross_entropy_alone(tmp_path):
    trainer = tiny_trainer(
        tmp_path, activation_regularization=2.0, temporal_activation_regularization=1.0, max_steps=3
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all({"loss_ce", "loss_ar", "loss_tar"} <= set(entry) for entry in logs)
    assert all(entry["loss"] > entry["loss_ce"] for entry in logs)
    metrics = trainer.evaluate()
    assert metrics["eval_perplexity"] == pytest.approx(np.exp(metrics["eval_loss"]))


def test_nt_asgd_triggers_on_a_scripted_validation_sequence():
    callback = NTASGDCallback(nonmono=2)
    model = torch.nn.Linear(2, 1)
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    for step, loss in enumerate([5.0, 4.0, 3.0, 3.1, 3.2, 3.3, 2.0]):
        state.global_step = step
        callback.on_evaluate(None, state, control, metrics={"eval_loss": loss}, model=model)
        # Check 4: 3.2 < min(5, 4), the best before the last two checks. Check 5: 3.3 > min(5, 4, 3): stalled.
        assert callback.active == (step >= 5)
    assert callback.trigger_step == 5


def test_nt_asgd_finetune_stops_when_validation_stalls():
    callback = NTASGDCallback(nonmono=1, average_from_start=True)
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    for loss in (3.0, 2.0, 2.5, 2.6):  # 2.6 > 2.0, the best before the last check
        callback.on_evaluate(None, state, control, metrics={"eval_loss": loss}, model=None)
    assert control.should_training_stop


def add_observer(trainer, observer: TrainerCallback) -> None:
    """Add a callback that only records, after the trainer's own callbacks: never an NTASGDCallback, so the only
    NT-ASGD logic that runs is the trainer's (`trainer.nt_asgd`), and the assertions see its effect alone."""
    assert not isinstance(observer, NTASGDCallback)
    trainer.add_callback(observer)
    callbacks = trainer.callback_handler.callbacks
    averaging = [callback for callback in callbacks if isinstance(callback, NTASGDCallback)]
    assert averaging == ([trainer.nt_asgd] if trainer.nt_asgd is not None else [])
    assert callbacks[-1] is observer


def train_with_snapshots(trainer) -> list[dict[str, torch.Tensor]]:
    """Train, keeping the weights after every optimizer step (the reference for an average)."""
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    add_observer(trainer, Snapshot())
    trainer.train()
    return snapshots


def test_nt_asgd_averages_evaluates_and_resumes_with_its_average(tmp_path):
    snapshots = train_with_snapshots(tiny_trainer(tmp_path / "plain", max_steps=6))
    # Finetune mode averages from the start: the initial weights plus the weights after every step.
    reference = tiny_trainer(tmp_path / "ref")
    initial = {n: p.detach().clone() for n, p in reference.model.named_parameters()}
    expected = {n: torch.stack([initial[n]] + [s[n] for s in snapshots]).mean(0) for n in initial}

    common = {"nt_asgd_finetune": True, "eval_strategy": "steps", "eval_steps": 100, "save_strategy": "steps"}
    # An uninterrupted run and a run killed after step 3 and resumed must end with the same averaged model.
    full = tiny_trainer(tmp_path / "full", max_steps=6, save_steps=3, **common)
    full.train()
    for name, param in full.model.named_parameters():
        torch.testing.assert_close(param, expected[name], msg=name)
    first = tiny_trainer(tmp_path / "resumed", max_steps=3, save_steps=3, **common)
    first.train()
    second = tiny_trainer(tmp_path / "resumed", max_steps=6, save_steps=3, **common)
    second.train(resume_from_checkpoint=last_complete_checkpoint(tmp_path / "resumed"))
    for name, param in second.model.named_parameters():
        torch.testing.assert_close(param, expected[name], msg=name)

    # Evaluation during training uses the average, and leaves the raw weights in place.
    mid = tiny_trainer(tmp_path / "mid", max_steps=3, **common)
    mid.train()
    raw = {n: p.detach().clone() for n, p in mid.model.named_parameters()}
    mid.nt_asgd.average = {n: v + 0.01 for n, v in raw.items()}
    mid.nt_asgd.finished = False
    shifted = tiny_trainer(tmp_path / "shifted")
    shifted.model.load_state_dict({k: v + 0.01 for k, v in mid.model.state_dict().items()})
    assert mid.evaluate()["eval_loss"] == pytest.approx(shifted.evaluate()["eval_loss"], rel=1e-5)
    for name, param in mid.model.named_parameters():
        torch.testing.assert_close(param, raw[name])


def targets_of(dataset):
    """(stream, position) -> target, over every segment of the layout."""
    seen = {}
    for index in range(len(dataset)):
        example = dataset[index]
        stream_id, segment = int(example["stream_id"]), int(example["segment_id"])
        start = dataset.bounds[segment]
        for offset, target in enumerate(example["shift_labels"].tolist()):
            if target != -100:
                key = (stream_id, start + offset)
                assert key not in seen, f"{key} predicted twice"
                seen[key] = target
    return seen


def test_variable_bptt_predicts_every_token_once_with_new_cuts_each_epoch():
    tokens = stream(5000)
    fixed = StreamSegments(tokens, 35, 4)
    variable = StreamSegments(tokens, 35, 4, variable_bptt=True, seed=0)
    assert len(variable) == len(fixed)  # the epoch length never changes
    lengths = []
    for epoch in range(3):
        variable.set_epoch(epoch)
        assert targets_of(variable) == targets_of(fixed)
        lengths.append(np.diff(variable.bounds))
    assert not np.array_equal(lengths[0], lengths[1])
    assert 30 < np.concatenate(lengths).mean() < 40 and np.concatenate(lengths).min() >= 1


def test_variable_bptt_scales_the_learning_rate_by_the_window_length(tmp_path):
    trainer = tiny_trainer(tmp_path, variable_bptt=True, num_train_epochs=2)
    seen = []

    class Record(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            seen.append(optimizer.param_groups[0]["lr"])

    add_observer(trainer, Record())
    trainer.train()
    steps_per_epoch = len(trainer.train_dataset) // 4
    lengths = []
    for epoch in range(2):
        trainer.train_dataset.set_epoch(epoch)
        lengths += np.diff(trainer.train_dataset.bounds).tolist()
    assert len(seen) == 2 * steps_per_epoch
    np.testing.assert_allclose(seen, [1.0 * length / 10 for length in lengths])


def test_nt_asgd_time_trigger_starts_averaging_in_a_budgeted_run(tmp_path):
    """With a wall-time budget the average starts at the latest after `nt_asgd_start_minutes`, stalled or not."""
    trainer = tiny_trainer(tmp_path, max_steps=4, nt_asgd=True, eval_strategy="steps", eval_steps=100)
    trainer.nt_asgd.start_after_s = 0.0  # already late at the first step
    snapshots = train_with_snapshots(trainer)
    # The trainer's own callback triggered at step 1, before any evaluation, and averaged the weights after steps
    # 1..4; the trained model holds that average, not the last raw weights.
    assert trainer.nt_asgd.trigger_step == 1 and trainer.nt_asgd.num_averaged == 4 == len(snapshots)
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(param, torch.stack([s[name] for s in snapshots]).mean(0), msg=name)
        assert not torch.equal(param, snapshots[-1][name]), name
