"""Every head trains through transformers' Trainer; gradient accumulation averages per token, not per batch."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from rnn_lm_hf import RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification
from tests.conftest import make_config


def padded_rows(num_rows=16, max_len=9, seed=0):
    """Right-padded rows of very different lengths, so micro-batches hold different token counts."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(num_rows):
        length = 2 + (i * 5) % (max_len - 1)
        ids = torch.randint(3, 99, (length,), generator=generator).tolist()
        pad = max_len - length
        rows.append(
            {
                "input_ids": ids + [0] * pad,
                "attention_mask": [1] * length + [0] * pad,
                "labels": ids + [-100] * pad,
                "tags": torch.randint(0, 3, (length,), generator=generator).tolist() + [-100] * pad,
                "sentiment": i % 2,
                "score": float(i % 5) / 4,
            }
        )
    return rows


def dataset_for(head, rows):
    if head is RNNLMForCausalLM:
        keys = {"labels": "labels"}
    elif head is RNNLMForTokenClassification:
        keys = {"tags": "labels"}
    else:
        keys = {"sentiment": "labels"}
    return Dataset.from_list(
        [
            {
                "input_ids": r["input_ids"],
                "attention_mask": r["attention_mask"],
                **{new: r[old] for old, new in keys.items()},
            }
            for r in rows
        ]
    )


def args(tmp_path, arguments_class=TrainingArguments, **overrides):
    defaults = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    return arguments_class(**{**defaults, **overrides})


@pytest.mark.parametrize("head", [RNNLMForCausalLM, RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_three_trainer_steps_per_head(tmp_path, cell_type, head):
    config = make_config(cell_type, num_labels=3, bidirectional=head is not RNNLMForCausalLM)
    model = head(config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(
        model=model,
        args=args(tmp_path, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2),
        train_dataset=dataset_for(head, padded_rows()),
        eval_dataset=dataset_for(head, padded_rows(8, seed=1)),
    )
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    predictions = trainer.predict(dataset_for(head, padded_rows(4, seed=2)))
    assert predictions.predictions.shape[0] == 4  # the cache is not gathered (keys_to_ignore_at_inference)


def one_step(tmp_path, head, rows, batch_size, accumulation, **config_overrides):
    torch.manual_seed(0)  # the same initial weights in both runs
    model = head(make_config("lstm", num_labels=1 if "problem_type" in config_overrides else 3, **config_overrides))
    trainer = Trainer(
        model=model,
        args=args(
            tmp_path,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            learning_rate=0.5,
            optim="sgd",
            lr_scheduler_type="constant",
        ),
        train_dataset=dataset_for(head, rows),
    )
    trainer.train()
    loss = next(log["loss"] for log in trainer.state.log_history if "loss" in log)
    return loss, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_gradient_accumulation_matches_the_big_batch_causal_lm(tmp_path):
    rows = padded_rows(8)
    big_loss, big_params = one_step(tmp_path / "big", RNNLMForCausalLM, rows, batch_size=8, accumulation=1)
    ga_loss, ga_params = one_step(tmp_path / "ga", RNNLMForCausalLM, rows, batch_size=2, accumulation=4)
    assert ga_loss == pytest.approx(big_loss, rel=1e-4)
    for name in big_params:
        torch.testing.assert_close(ga_params[name], big_params[name], atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_accumulation_matches_the_big_batch_token_classification(tmp_path):
    rows = padded_rows(8)
    big_loss, big_params = one_step(tmp_path / "big", RNNLMForTokenClassification, rows, 8, 1)
    ga_loss, ga_params = one_step(tmp_path / "ga", RNNLMForTokenClassification, rows, 2, 4)
    assert ga_loss == pytest.approx(big_loss, rel=1e-4)
    for name in big_params:
        torch.testing.assert_close(ga_params[name], big_params[name], atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_accumulation_regression_is_rescaled(tmp_path):
    rows = [{**r, "sentiment": r["score"]} for r in padded_rows(8)]
    big_loss, big_params = one_step(
        tmp_path / "big", RNNLMForSequenceClassification, rows, 8, 1, problem_type="regression"
    )
    ga_loss, ga_params = one_step(
        tmp_path / "ga", RNNLMForSequenceClassification, rows, 2, 4, problem_type="regression"
    )
    assert ga_loss == pytest.approx(big_loss, rel=1e-4)
    for name in big_params:
        torch.testing.assert_close(ga_params[name], big_params[name], atol=1e-5, rtol=1e-4, msg=name)
