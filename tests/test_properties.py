"""Property-based tests (hypothesis): invariants that must hold for every cell type, size, padding and batch.

Models are tiny (hidden 1..8, vocab 5..20, up to 3 layers) and their weights are drawn large (every weight ~ U(-0.5,
0.5)), so that a pad token leaking into a state or a row leaking into another moves the outputs far beyond `ATOL`.
Pad positions hold random real token ids: only the attention mask says they are padding. Every option that changes
what a forward reads is drawn too (per-layer sizes, separate directions, a first <eos>, a character CNN, a layer mix,
a head BiLSTM, a CRF), so each is crossed with left/right padding, batch composition and the cache.
"""

import math
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from transformers import TrainingArguments, default_data_collator

from rnn_lm_hf import (
    RNNLMConfig,
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    RNNLMModel,
)
from rnn_lm_hf.data import eval_stream_segments
from rnn_lm_hf.trainer import CarriedState, RNNLMTrainer
from tests.conftest import CELL_TYPES, cache_of


ATOL = 1e-5
CELLS = [("rnn", "relu"), *((cell, "tanh") for cell in CELL_TYPES)]  # every cell of the package's table
POOLINGS = ["last", "mean", "max", "concat"]
HEADS = [RNNLMModel, RNNLMForCausalLM, RNNLMForTokenClassification, RNNLMForSequenceClassification]
FEW = settings(max_examples=50, deadline=None, derandomize=True)


@st.composite
def configs(draw) -> dict:
    """Keyword arguments of a tiny `RNNLMConfig` of any cell type, with or without each option that changes what a
    forward reads (a dict: hypothesis reports it readably). `build` drops what a head cannot take."""
    cell_type, nonlinearity = draw(st.sampled_from(CELLS))
    num_layers = draw(st.integers(1, 3))
    bidirectional = draw(st.booleans())
    hidden_sizes = draw(st.none() | st.lists(st.integers(1, 8), min_size=num_layers, max_size=num_layers))
    head_rnn_size = draw(st.sampled_from([0, 0, 1, 3]))
    config = {
        "vocab_size": draw(st.integers(5, 20)),
        "hidden_size": draw(st.integers(1, 8)),
        "hidden_sizes": hidden_sizes,
        "embedding_size": draw(st.none() | st.integers(1, 8)),
        "num_hidden_layers": num_layers,
        "cell_type": cell_type,
        "rnn_nonlinearity": nonlinearity,
        "bidirectional": bidirectional,
        "separate_directions": bidirectional and draw(st.booleans()),  # ELMo's biLM: a stack per direction
        "start_after_eos": draw(st.booleans()),
        "classifier_pooling": draw(st.sampled_from(POOLINGS)),
        "num_labels": draw(st.integers(1, 4)),
        # The heads' options: ELMo's scalar mix (equally wide layers only), a task BiLSTM with or without its own
        # embeddings, a CRF over the tags.
        "layer_mix": hidden_sizes is None and draw(st.booleans()),
        "head_rnn_size": head_rnn_size,
        "head_embedding_size": draw(st.sampled_from([0, 2])) if head_rnn_size else 0,
        "use_crf": draw(st.booleans()),
    }
    if draw(st.booleans()):  # a character CNN over every token's spelling, drawn by `build`
        config |= {
            "char_cnn_filters": draw(st.integers(1, 3)),
            "char_vocab_size": draw(st.integers(2, 6)),
            "char_embedding_size": draw(st.integers(1, 3)),
            "max_token_chars": draw(st.integers(1, 4)),
        }
    return config


@st.composite
def padded_batches(draw, max_rows: int = 4) -> tuple[list[int], list[int], int]:
    """Row lengths, left paddings and the batch width: each row is padded left, right, both or not at all."""
    lengths = draw(st.lists(st.integers(1, 7), min_size=1, max_size=max_rows))
    lefts = draw(st.lists(st.integers(0, 3), min_size=len(lengths), max_size=len(lengths)))
    width = max(left + length for left, length in zip(lefts, lengths)) + draw(st.integers(0, 2))
    return lengths, lefts, width


def build(head, config: dict, seed: int):
    """The head in eval mode, every weight ~ U(-0.5, 0.5), every token spelled with random characters; a causal LM is
    bidirectional only with separate directions (a biLM)."""
    bidirectional = config["bidirectional"] and (head is not RNNLMForCausalLM or config["separate_directions"])
    separate_directions = bidirectional and config["separate_directions"]
    config = RNNLMConfig(**{**config, "bidirectional": bidirectional, "separate_directions": separate_directions})
    torch.manual_seed(seed)
    model = head(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # biases, CRF scores and the layer mix too: none starts at a constant
            param.uniform_(-0.5, 0.5)
        if config.char_cnn_filters:
            spellings = model.base_model.spelling.spellings  # (vocab_size, max_token_chars), 0 = no character
            spellings.copy_(torch.randint(0, config.char_vocab_size, spellings.shape))
    return model


def make_batch(config, lengths, lefts, width) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Random rows, and the padded batch holding them at `lefts`; pads are random ids too, masked out."""
    rows = [torch.randint(0, config.vocab_size, (length,)) for length in lengths]
    input_ids = torch.randint(0, config.vocab_size, (len(rows), width))
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (row, left) in enumerate(zip(rows, lefts)):
        input_ids[b, left : left + len(row)] = row
        mask[b, left : left + len(row)] = 1
    return rows, input_ids, mask


@torch.no_grad()
def features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """(per-token outputs (batch, seq_len, dim) or None, per-row outputs [(batch, ...)]) of any head.

    No mask means no padding: an all-ones mask, since the sequence head would otherwise take pad ids for padding.
    """
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    if isinstance(model, RNNLMForCausalLM):
        out = model(input_ids, attention_mask=attention_mask, use_cache=True)
        if out.logits_backward is not None:  # a biLM: both directions' scores, no cache
            return torch.cat([out.logits, out.logits_backward], -1), []
        return out.logits, [layer.recurrent_states[0] for layer in cache_of(out).layers]
    if isinstance(model, RNNLMModel):
        out = model(input_ids, attention_mask=attention_mask, output_final_states=True)
        return out.last_hidden_state, list(out.final_states)
    out = model(input_ids, attention_mask=attention_mask)
    if isinstance(model, RNNLMForTokenClassification):
        return out.logits, []
    return None, [out.logits]


def assert_row_matches(batch_features, b: int, real: torch.Tensor, alone_features, msg: str, padded=False) -> None:
    """Row `b` of a batch, at its `real` positions, has the outputs of `alone_features` (a batch of one row,
    unpadded, or `padded` as row `b` is)."""
    (tokens, per_row), (alone_tokens, alone_per_row) = batch_features, alone_features
    if tokens is not None:
        alone_tokens = alone_tokens[0, real] if padded else alone_tokens[0]
        torch.testing.assert_close(tokens[b, real], alone_tokens, atol=ATOL, rtol=0, msg=msg)
    for i, (value, alone) in enumerate(zip(per_row, alone_per_row)):
        torch.testing.assert_close(value[b], alone[0], atol=ATOL, rtol=0, msg=f"{msg}, per-row output {i}")


@pytest.mark.parametrize("head", [RNNLMModel, RNNLMForCausalLM])
@FEW
@given(config=configs(), layout=padded_batches(), prefix=st.integers(0, 9), seed=st.integers(0, 3))
def test_cached_equals_uncached(head, config, layout, prefix, seed):
    """A forward over a prefix, then token by token from the returned cache == one forward over the whole batch."""
    model = build(head, {**config, "bidirectional": False}, seed)
    _, input_ids, mask = make_batch(model.config, *layout)
    prefix = min(max(prefix, 1), input_ids.shape[1])
    full = features(model, input_ids, mask)
    out = model(input_ids[:, :prefix], attention_mask=mask[:, :prefix], use_cache=True)
    pieces, cache = [out.logits if head is RNNLMForCausalLM else out.last_hidden_state], cache_of(out)
    for t in range(prefix, input_ids.shape[1]):
        out = model(input_ids[:, t : t + 1], attention_mask=mask[:, t : t + 1], cache=cache, use_cache=True)
        pieces.append(out.logits if head is RNNLMForCausalLM else out.last_hidden_state)
        cache = cache_of(out)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(pieces, 1)[real], full[0][real], atol=ATOL, rtol=0)
    for layer, state in zip(cache.layers, full[1]):
        torch.testing.assert_close(layer.recurrent_states[0], state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", HEADS)
@FEW
@given(config=configs(), layout=padded_batches(), seed=st.integers(0, 3))
def test_padding_invariance(head, config, layout, seed):
    """A left/right/both-padded row gives, at its real positions, the outputs and final states of the row alone."""
    model = build(head, config, seed)
    rows, input_ids, mask = make_batch(model.config, *layout)
    batch = features(model, input_ids, mask)
    for b, row in enumerate(rows):
        assert_row_matches(batch, b, mask[b].bool(), features(model, row[None]), f"row {b}")


@pytest.mark.parametrize("head", HEADS)
@FEW
@given(config=configs(), layout=padded_batches(), order_seed=st.integers(0, 100), seed=st.integers(0, 3))
def test_batch_composition_invariance(head, config, layout, order_seed, seed):
    """A row's outputs do not depend on the other rows of its batch, nor on its place in it."""
    model = build(head, config, seed)
    _, input_ids, mask = make_batch(model.config, *layout)
    batch = features(model, input_ids, mask)
    order = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(order_seed))
    shuffled = features(model, input_ids[order], mask[order])
    for b in range(len(input_ids)):
        alone = features(model, input_ids[b : b + 1], mask[b : b + 1])
        assert_row_matches(batch, b, mask[b].bool(), alone, f"row {b} alone", padded=True)
        position = int((order == b).nonzero())
        assert_row_matches(shuffled, position, mask[b].bool(), alone, f"row {b} moved to {position}", padded=True)


@pytest.mark.parametrize("head", HEADS)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(config=configs(), layout=padded_batches(), seed=st.integers(0, 3))
def test_save_load_identity(head, config, layout, seed):
    """save_pretrained then from_pretrained gives bit-identical weights and the same outputs."""
    model = build(head, config, seed)
    _, input_ids, mask = make_batch(model.config, *layout)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = head.from_pretrained(folder).eval()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, atol=0, rtol=0, msg=name)
    (tokens, per_row), (loaded_tokens, loaded_per_row) = (
        features(model, input_ids, mask),
        features(loaded, input_ids, mask),
    )
    for value, again in zip([tokens, *per_row], [loaded_tokens, *loaded_per_row]):
        if value is not None:
            # Loaded tensors sit at other memory alignments, so CPU kernels may sum in another order (~1e-8).
            torch.testing.assert_close(again, value, atol=ATOL, rtol=0)


def draw_stream(data, config: RNNLMConfig) -> tuple[torch.Tensor, int, int]:
    """A random token stream, a bptt and a number of parallel streams that fit it."""
    num_tokens = data.draw(st.integers(2, 40), label="num_tokens")
    bptt = data.draw(st.integers(1, num_tokens - 1), label="bptt")
    batch_size = data.draw(st.integers(1, min(4, num_tokens - 1)), label="batch_size")
    return torch.randint(0, config.vocab_size, (num_tokens,)), bptt, batch_size


@torch.no_grad()
def long_forward_nll(model, stream: torch.Tensor, stream_lengths: list[int]) -> torch.Tensor:
    """Summed NLL of each parallel stream scored by ONE forward over it (one stream: the whole split at once)."""
    total, start = torch.zeros((), dtype=torch.float64), 1
    for length in stream_lengths:
        logits = model(stream[start - 1 : start - 1 + length][None]).logits[0]
        total += torch.nn.functional.cross_entropy(logits, stream[start : start + length], reduction="sum").double()
        start += length
    return total


@FEW
@given(config=configs(), data=st.data(), seed=st.integers(0, 3))
def test_stream_evaluation_equals_one_long_forward(config, data, seed):
    """Segments of `eval_stream_segments`, carrying the state as the trainer does == one forward per stream."""
    model = build(RNNLMForCausalLM, {**config, "bidirectional": False}, seed)  # a stream carries a cache
    stream, bptt, batch_size = draw_stream(data, model.config)
    segments = eval_stream_segments(stream, bptt, per_device_batch_size=batch_size)
    carried, total, count = CarriedState(), torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for batch in DataLoader(segments, batch_size=batch_size, collate_fn=default_data_collator):
            cache = carried.take(batch.pop("stream_id"), batch.pop("segment_id"))
            targets = batch.pop("shift_labels")
            out = model(batch["input_ids"], attention_mask=batch["attention_mask"], cache=cache, use_cache=True)
            carried.cache = cache_of(out)
            nll = torch.nn.functional.cross_entropy(
                out.logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
            )
            total, count = total + nll.double(), count + int((targets != -100).sum())
    assert count == len(stream) - 1
    reference = long_forward_nll(model, stream, segments.stream_lengths)
    torch.testing.assert_close(total, reference, atol=1e-4, rtol=1e-5)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(config=configs(), data=st.data(), seed=st.integers(0, 3))
def test_trainer_stream_evaluation_equals_one_long_forward(config, data, seed):
    """`RNNLMTrainer.evaluate` on stream segments reports the loss of one long forward over each stream."""
    model = build(RNNLMForCausalLM, {**config, "bidirectional": False}, seed)  # a stream carries a cache
    stream, bptt, batch_size = draw_stream(data, model.config)
    segments = eval_stream_segments(stream, bptt, per_device_batch_size=batch_size)
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder,
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
            per_device_eval_batch_size=batch_size,
            disable_tqdm=True,
        )
        metrics = RNNLMTrainer(model=model, args=args, data_collator=default_data_collator).evaluate(segments)
    reference = float(long_forward_nll(model, stream, segments.stream_lengths)) / (len(stream) - 1)
    assert metrics["eval_tokens"] == len(stream) - 1
    assert metrics["eval_loss"] == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(reference), rel=1e-5)
