"""Gradient (activation) checkpointing really checkpoints: every recurrent layer is re-run during backward, and the
gradients are those of the run without it, for reentrant and non-reentrant checkpointing, padded or not."""

import pytest
import torch
from transformers import Trainer, TrainingArguments, default_data_collator

from rnn_lm_hf import RNNLMForCausalLM, RNNLMForTokenClassification
from tests.conftest import make_config


HEADS = {
    "causal_lm": (RNNLMForCausalLM, {}),
    "bidirectional_tagger": (RNNLMForTokenClassification, {"bidirectional": True, "num_labels": 3}),
}


def enable_checkpointing(model, use_reentrant: bool) -> None:
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.24+; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def count_rnn_calls(model) -> list[int]:
    """Calls of each layer's torch RNN (inside the checkpointed region), counted when they start: non-reentrant
    checkpointing stops a recomputation early, once it has every tensor it needs, so a forward may never return."""
    calls = [0] * len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        layer.rnn.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def batch(model, padded: bool) -> dict[str, torch.Tensor]:
    """Two rows of 7; padded: the first is left-padded by 2 and the second right-padded by 3."""
    input_ids = torch.randint(3, 99, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]) if padded else torch.ones(2, 7, dtype=int)
    if isinstance(model, RNNLMForCausalLM):
        labels = input_ids.masked_fill(mask == 0, -100)
    else:
        labels = torch.randint(0, model.config.num_labels, (2, 7)).masked_fill(mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_checkpointing_recomputes_each_layer_with_the_same_gradients(cell_type, head, padded, use_reentrant):
    """Checkpointed layers run once forward and once more in backward, and leave every gradient unchanged."""
    model_class, overrides = HEADS[head]
    model = model_class(make_config(cell_type, dropout=0.0, **overrides)).train()
    inputs = batch(model, padded)
    model(**inputs).loss.backward()
    reference = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad()

    enable_checkpointing(model, use_reentrant)
    calls = count_rnn_calls(model)
    loss = model(**inputs).loss
    assert calls == [1] * len(calls)
    loss.backward()
    assert calls == [2] * len(calls), f"layers not recomputed during backward: rnn calls per layer {calls}"
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, reference[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_checkpointing_through_trainer_recomputes_and_trains_the_same(tmp_path, use_reentrant):
    """Trainer's checkpointing flag re-runs every layer in each backward and ends at the weights of a plain run."""
    flag = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else ""
    flag = flag or "gradient_checkpointing"
    torch.manual_seed(0)
    rows = [batch(RNNLMForCausalLM(make_config()), padded=True) for _ in range(2)]
    examples = [{key: value[b] for key, value in row.items()} for row in rows for b in range(2)]

    def train(checkpointing: bool) -> tuple[dict[str, torch.Tensor], list[int]]:
        torch.manual_seed(1)
        model = RNNLMForCausalLM(make_config())
        calls = count_rnn_calls(model)
        extra = {flag: True, f"{flag}_kwargs": {"use_reentrant": use_reentrant}} if checkpointing else {}
        args = TrainingArguments(
            output_dir=str(tmp_path / str(checkpointing)),
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=0.01,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            **extra,
        )
        Trainer(model=model, args=args, train_dataset=examples, data_collator=default_data_collator).train()
        return {name: param.detach().clone() for name, param in model.named_parameters()}, calls

    plain, plain_calls = train(checkpointing=False)
    checkpointed, checkpointed_calls = train(checkpointing=True)
    assert plain_calls == [2, 2] and checkpointed_calls == [4, 4]  # 2 steps: forward (+ recompute) per layer
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, atol=1e-6, rtol=1e-5, msg=name)
