"""The same model on CUDA: equal to the CPU model, padding-exact through cuDNN's packed path, cached generation,
bf16 autocast and a few Trainer steps. Marked `gpu` (deselected by default, skipped without a CUDA device):

    python -m pytest -m gpu tests/test_gpu.py
"""

import pytest
import torch
from transformers import Trainer, TrainingArguments

from rnn_lm_hf import RNNLMForCausalLM, RNNLMForSequenceClassification, RNNLMForTokenClassification
from tests.conftest import cache_of, make_config


pytestmark = pytest.mark.gpu
ATOL = 1e-4  # cuDNN's kernels sum in another order than the CPU's


def ids(batch=2, seq_len=9):
    return torch.randint(3, 99, (batch, seq_len))


def test_cuda_matches_cpu_and_continues_from_its_cache(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # on by default: TF32 rounds to ~1e-3
    cpu_model = RNNLMForCausalLM(tiny_config).eval()
    model = RNNLMForCausalLM(tiny_config).eval().cuda()
    model.load_state_dict(cpu_model.state_dict())
    input_ids = ids(seq_len=12)
    full = model(input_ids.cuda()).logits
    torch.testing.assert_close(full.cpu(), cpu_model(input_ids).logits, atol=ATOL, rtol=0)
    prefix = model(input_ids[:, :7].cuda(), use_cache=True)
    rest = model(input_ids[:, 7:].cuda(), cache=cache_of(prefix), use_cache=True).logits
    torch.testing.assert_close(torch.cat([prefix.logits, rest], 1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", [RNNLMForTokenClassification, RNNLMForSequenceClassification])
def test_padding_never_enters_the_state_on_cuda(cell_type, head):
    config = make_config(cell_type, bidirectional=True, classifier_pooling="concat", num_labels=3)
    model = head(config).eval().cuda()
    short, long = ids(batch=1, seq_len=4), ids(batch=1, seq_len=7)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1), long]).cuda()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1] * 7]).cuda()
    logits = model(batch, attention_mask=mask).logits
    alone = model(short.cuda()).logits[0]
    torch.testing.assert_close(logits[0, :4] if logits.dim() == 3 else logits[0], alone, atol=ATOL, rtol=0)


def test_cached_generation_equals_uncached_on_cuda(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval().cuda()
    prompt = ids(batch=2, seq_len=5).cuda()
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_out_of_range_ids_still_raise_a_clear_error_in_inference(tiny_config):
    model = RNNLMForCausalLM(tiny_config).eval().cuda()
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        model(torch.tensor([[5, 99]]).cuda())


def test_bf16_autocast_trains(tiny_config):
    model = RNNLMForCausalLM(tiny_config).cuda()
    input_ids = ids(batch=4, seq_len=16).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids, labels=input_ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_trainer_steps_on_cuda(tmp_path, tiny_config):
    model = RNNLMForCausalLM(tiny_config)
    data = [{"input_ids": row, "labels": row} for row in ids(batch=16, seq_len=10)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=4, learning_rate=0.01,
        report_to="none", save_strategy="no", bf16=True, disable_tqdm=True,
    )  # fmt: skip
    result = Trainer(model=model, args=args, train_dataset=data).train()
    assert next(model.parameters()).is_cuda and result.global_step == 5 and result.training_loss > 0
