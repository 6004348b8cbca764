"""Recurrent language models (every cell of the config's `CELL_TYPES`: Elman RNN, LSTM, GRU, ...) as transformers models.

One file, importing only torch, transformers and the sibling config, so `save_pretrained` can ship it as Hub code.
"""

import inspect
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import logging

from .configuration_rnn_lm import CELL_TYPES, CRF_SCHEMES, RNNLMConfig


logger = logging.get_logger(__name__)

# transformers 5.24 renamed the cache kwarg/output field `past_key_values` -> `cache`; earlier 5.x use the old name.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
LEGACY_CACHE_NAMES = ("past_key_values", "cache_params")
# Label id that the losses (torch's cross-entropy) and the package's metrics skip: padding, unlabelled sub-words.
IGNORE_INDEX = -100
# The cell type a recurrent module runs (the head RNN's LSTM included), for its initialisation.
CELL_OF_MODULE = {cell.module: cell for cell in CELL_TYPES.values()}


def pop_cache(cache: Cache | None, kwargs: dict, owner: nn.Module) -> Cache | None:
    """`cache`, or the state passed under a legacy name: older transformers' generate() passes `past_key_values=`; on
    5.24+ the old names are deprecated aliases (warned, as transformers' own models do). Done here rather than by a
    decorator, so `torch.compile` traces each forward once instead of one wrapper shared by all of them."""
    for old_name in LEGACY_CACHE_NAMES:
        legacy = kwargs.pop(old_name, None)
        if legacy is not None and CACHE_FIELD == "cache":
            warnings.warn(
                f"`{old_name}` is deprecated and will be removed in version 5.40.0 for "
                f"`{type(owner).__name__}.forward`. Use `cache` instead.",
                FutureWarning,
                stacklevel=3,
            )
        cache = legacy if cache is None else cache
    return cache


class RNNLMCache(DynamicCache):
    """The recurrent state as a transformers `Cache`: one recurrent (linear-attention) layer per hidden layer, each
    holding a constant-size state, reordered by beam search like any cache. It also counts the positions it has
    consumed, because transformers < 5.24 asks every cache for its length during generate().
    """

    def __init__(self, config: RNNLMConfig):
        super().__init__(config=config)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def advance(self, num_tokens: int) -> None:
        self.seen_tokens += num_tokens

    @property
    def is_compileable(self) -> bool:
        # The eager default: generate() compiles its decoding step only for a cache that says it is compileable.
        return False


def unread_length(num_inputs: int, cache: Cache) -> int:
    """How many of the last positions of generate()'s prompt a cache has not read yet, the prompt being either the
    whole sequence so far (`result.sequences`, maybe with new tokens after it: the cache read its first positions)
    or only tokens after what the cache read (such as the last generated token). A prompt no longer than what the
    cache read cannot be the whole sequence, so it holds only new tokens."""
    read = int(cache.get_seq_length())
    return num_inputs - read if num_inputs > read else num_inputs


class RNNLMStaticCache(RNNLMCache):
    """The recurrent cache for compiled decoding: `generate(..., cache_implementation="static")` builds it, or pass
    `cache=RNNLMStaticCache(model.config)`. The states, the beam reorder and the token count are all written in place,
    so every buffer keeps the address it got at prefill and a compiled (CUDA-graph) decoding step replays on them.
    On CUDA, generate() then compiles its per-token step (transformers' auto-compile); elsewhere it runs eagerly.
    """

    def __init__(self, config: RNNLMConfig):
        super().__init__(config)
        self.token_count: torch.Tensor | None = None  # () on the states' device, made at the first write

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.token_count is None else int(self.token_count)

    def advance(self, num_tokens: int) -> None:
        # A Python int would be a constant in the compiled step (a recompile per token): count on the device.
        if self.token_count is None:
            self.token_count = torch.zeros((), dtype=torch.long, device=self.layers[0].recurrent_states[0].device)
            if not torch.compiler.is_compiling():
                torch._dynamo.mark_static_address(self.token_count)
        self.token_count.add_(num_tokens)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        # Beam search picks rows after every step; copy them back into the same buffers instead of reassigning them.
        for layer in self.layers:
            if layer.is_recurrent_states_initialized[0]:
                state = layer.recurrent_states[0]  # (batch * num_beams, num_states, hidden)
                state.copy_(state.index_select(0, beam_idx.to(state.device)))

    def reset(self) -> None:
        super().reset()
        if self.token_count is not None:
            self.token_count.zero_()

    @property
    def is_compileable(self) -> bool:
        return True


@dataclass
class RNNLMModelOutput(BaseModelOutputWithPast):
    r"""
    final_states (`tuple(torch.FloatTensor)`, one per layer, only with `output_final_states=True`):
        Each layer's state after the last real token of every row, shape
        `(batch_size, num_states * num_directions, hidden_size)`: `h` per direction, then `c` per direction for LSTM.
        With `bidirectional`, the backward `h` is the state after reading back to the first real token.
    """

    final_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RNNLMCausalLMOutput(CausalLMOutputWithPast):
    r"""
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`, *optional*):
        The output layer's scores; with an adaptive softmax (`config.softmax_cutoffs`), the log-probabilities of every
        token, and none in a training forward given labels (its loss scores each position's target cluster only).
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, output_size)`, *optional*):
        With `output_hidden_states=True`: the last layer's output after its dropout, the softmax's input before
        the optional projection (AWD-LSTM's activation regularisation penalises it).
    logits_backward (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`, *optional*):
        A bidirectional LM's backward direction: at each position, the scores of the token before it (`logits`
        are the forward direction's, for the token after it).
    loss_forward, loss_backward (`torch.FloatTensor`, *optional*):
        A bidirectional LM's loss per direction; `loss` is their mean.
    """

    last_hidden_state: torch.FloatTensor | None = None
    logits_backward: torch.FloatTensor | None = None
    loss_forward: torch.FloatTensor | None = None
    loss_backward: torch.FloatTensor | None = None


class PaddingPacker:
    """Runs padded batches as packed sequences, so padding never enters the recurrent state wherever it sits.

    Real tokens of every row are moved to the front (stable, so their order is kept), packed for cuDNN, and the
    outputs are scattered back to their original positions with zeros at the pads. This handles left padding
    (batched generation), right padding (classification batches) and holes alike.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.mask = mask = attention_mask.bool()  # (batch, seq_len)
        self.seq_len = mask.shape[1]
        self.lengths = mask.sum(dim=1)  # (batch,)
        self.empty = self.lengths == 0  # rows with no real token keep their state untouched
        self.order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (batch, seq_len) real first

    def pack(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The packed data (total_tokens, dim) and its layout (batch_sizes, sorted_indices, unsorted_indices)."""
        x = x.gather(1, self.order.unsqueeze(-1).expand_as(x))
        # pack_padded_sequence rejects empty rows: run them on one dummy step, undone in `unpack`/`final_state`.
        lengths = self.lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return packed.data, (packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)

    def unpack(self, data: torch.Tensor, packing: tuple[torch.Tensor, ...]) -> torch.Tensor:
        packed = PackedSequence(data, *packing)
        x, _ = pad_packed_sequence(packed, batch_first=True, total_length=self.seq_len)  # (batch, seq_len, dim)
        x = x.masked_fill(self.empty[:, None, None], 0.0)
        return torch.zeros_like(x).scatter(1, self.order.unsqueeze(-1).expand_as(x), x)

    def reversal_index(self) -> torch.Tensor:
        """(batch, seq_len) positions that read every row's real tokens in reverse order, padding left in place:
        `x.gather(1, index)` reverses the rows (the backward LM's input), and doing it again restores them."""
        rank = self.mask.long().cumsum(1) - 1  # each real position's rank among its row's real positions
        mirrored = (self.lengths.unsqueeze(1) - 1 - rank).clamp(min=0)
        positions = torch.arange(self.seq_len, device=self.mask.device).expand_as(self.mask)
        return torch.where(self.mask, self.order.gather(1, mirrored), positions)

    def final_state(self, new: torch.Tensor, old: torch.Tensor | None) -> torch.Tensor:
        old = torch.zeros_like(new) if old is None else old
        return torch.where(self.empty[:, None, None], old, new)


def locked_dropout(
    x: torch.Tensor, p: float, training: bool, packing: tuple[torch.Tensor, ...] | None = None
) -> torch.Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, shared by all its time steps.

    `x` is (batch, seq_len, dim), or packed data (total_tokens, dim) with its `packing` layout, whose time step t
    holds the first `batch_sizes[t]` sequences in sorted order.
    """
    if not training or p == 0:
        return x
    if packing is None:
        return x * x.new_empty(x.shape[0], 1, x.shape[-1]).bernoulli_(1 - p) / (1 - p)
    batch_sizes = packing[0]  # (seq_len,) on the CPU
    mask = x.new_empty(int(batch_sizes[0]), x.shape[-1]).bernoulli_(1 - p) / (1 - p)  # (batch, dim)
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    rows = torch.arange(int(batch_sizes.sum())) - torch.repeat_interleave(starts, batch_sizes)  # sequence of each row
    return x * mask[rows.to(x.device)]


def check_labels(labels: torch.Tensor, shape: torch.Size, name: str = "labels", num_classes: int | None = None):
    """A clear error for labels of the wrong shape or class ids out of range, instead of torch's deep message."""
    if labels.shape != shape:
        raise ValueError(
            f"`{name}` has shape {tuple(labels.shape)} but the inputs need {tuple(shape)}: one label per "
            f"{'token' if len(shape) == 2 else 'sequence'}, -100 where none."
        )
    if num_classes is None or labels.is_floating_point() or labels.numel() == 0 or labels.is_cuda:
        return  # reading the values on the host would stall a GPU step
    real = labels[labels != IGNORE_INDEX]
    if real.numel() and (real.min() < 0 or real.max() >= num_classes):
        bad = int(real.min()) if real.min() < 0 else int(real.max())
        raise ValueError(
            f"`{name}` holds class id {bad}, outside [0, num_labels={num_classes}): build the model with "
            "num_labels covering every class (and id2label/label2id), or map the labels first; -100 is ignored."
        )


def trim_mask(attention_mask: torch.Tensor | None, inputs: torch.Tensor | None) -> torch.Tensor | None:
    """A head's mask for its own positions: the last `seq_len` entries (a running mask may be longer than the call's
    inputs), so everything after the encoder reads one (batch, seq_len) mask."""
    return attention_mask if attention_mask is None else attention_mask[:, -inputs.shape[1] :]


# Logits per block of the loss's row loop: 256k fp32 scores (1 MiB) stay in a CPU core's L2 cache.
LOSS_BLOCK_ELEMENTS = 2**18


def softmax_cross_entropy_rows(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, grad: torch.Tensor | None
) -> torch.Tensor:
    """Each row's cross-entropy (fp32); given `grad`, also writes `weights * (softmax - one-hot)` into it (the logits'
    dtype). One exp per logit, in fp32."""
    top = logits.amax(-1, keepdim=True).float()
    exp = (logits - top).exp_()  # fp32 (top is), without an fp32 copy of the logits
    total = exp.sum(-1, keepdim=True)
    losses = (top + total.log() - logits.gather(1, targets).float()).squeeze(1)
    if grad is not None:  # weights * softmax - weights * one-hot, in one pass over the exps
        grad.copy_(exp.mul_(weights / total).scatter_add_(1, targets, -weights))
    return losses


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy of (tokens, vocab) logits, summed over the targets that are not `ignore_index` and divided by
    `divisor`, whose forward pass also computes the gradient (softmax - one-hot) in the logits' dtype.

    Eager, it works through the rows a block at a time in fp32, so bf16 logits are never copied to fp32 whole and each
    (tokens, vocab) array is read and written once, with one exp per logit (log-softmax + NLL and their backward take
    two). The softmax is most of a small LM's training step on a CPU: under bf16 autocast this takes it from about
    75 to 45 ms at PTB 2x200 (700 tokens x 10k), in fp32 from about 105 to 90 ms. Compiled, it is one pass, which
    inductor fuses the same way (a loop would tie the graph to the sequence length)."""

    @staticmethod
    def forward(ctx, logits, targets, divisor, ignore_index):
        ignored = targets == ignore_index
        targets = targets.masked_fill(ignored, 0).unsqueeze(1)
        weights = (~ignored).unsqueeze(1) / divisor  # each target's share of the gradient
        grad = torch.empty_like(logits) if ctx.needs_input_grad[0] else None
        if torch.compiler.is_compiling():
            losses = softmax_cross_entropy_rows(logits, targets, weights, grad)
        else:
            rows, vocab = logits.shape
            block = max(1, LOSS_BLOCK_ELEMENTS // vocab)
            losses = logits.new_empty(rows, dtype=torch.float32)
            for start in range(0, rows, block):
                part = slice(start, start + block)
                part_grad = None if grad is None else grad[part]
                losses[part] = softmax_cross_entropy_rows(logits[part], targets[part], weights[part], part_grad)
        ctx.save_for_backward(grad)
        return losses.masked_fill(ignored, 0.0).sum() / divisor

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        # The loss is nearly always differentiated as it is: then skip a pass over (tokens, vocab), which on a CPU costs
        # as much as the softmax's own (the check is free there; elsewhere it would wait for the device).
        if grad_output.device.type == "cpu" and not torch.compiler.is_compiling() and grad_output.item() == 1.0:
            return grad, None, None, None
        return grad * grad_output.to(grad.dtype), None, None, None


def lm_targets(
    labels: torch.Tensor | None,
    shift_labels: torch.Tensor | None,
    num_items_in_batch: torch.Tensor | int | None,
    ignore_index: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LM's flat next-token targets and the loss's divisor, as transformers' `ForCausalLMLoss` makes them:
    `labels` are shifted here, `shift_labels` are not; the divisor is `num_items_in_batch` when the Trainer gives it,
    else the number of targets that are not `ignore_index`."""
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(device)
    divisor = (targets != ignore_index).sum() if num_items_in_batch is None else num_items_in_batch
    return targets, torch.as_tensor(divisor, dtype=torch.float32, device=device)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """transformers' `ForCausalLMLoss` (same arguments, same value: summed and divided by `num_items_in_batch` when the
    Trainer gives it, else averaged), computed by `SoftmaxCrossEntropy` from logits of any dtype instead of an fp32
    copy."""
    targets, divisor = lm_targets(labels, shift_labels, num_items_in_batch, ignore_index, logits.device)
    return SoftmaxCrossEntropy.apply(logits.reshape(-1, vocab_size), targets, divisor, ignore_index)


@torch.compiler.disable  # which rows a cluster scores depends on the data: eager, between compiled graphs
def adaptive_softmax_loss(
    features: torch.Tensor,
    lm_head: nn.Linear,
    cluster_head: nn.Linear,
    cutoffs: list[int],
    labels: torch.Tensor | None,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """`causal_lm_loss` of the adaptive softmax (`config.softmax_cutoffs`) from the features the output layer reads,
    without the whole vocabulary's logits: the head scores every position over the frequent tokens and the clusters,
    and each cluster's softmax only the positions whose target is in it (AWD-LSTM's `SplitCrossEntropyLoss`).
    -log p(token) = -log p_head(its cluster) - log p_cluster(token), so the value equals the cross-entropy of
    `RNNLMForCausalLM.logits`."""
    targets, divisor = lm_targets(labels, shift_labels, num_items_in_batch, ignore_index, features.device)
    features = features.reshape(-1, features.shape[-1])
    bounds = [*cutoffs, lm_head.out_features]
    head = cutoffs[0]
    # 0: the head's own tokens (and ignored targets, which are negative); k: the k-th cluster
    cluster = torch.bucketize(targets, targets.new_tensor(bounds), right=True)
    head_targets = torch.where(cluster == 0, targets, head + cluster - 1)
    # split, not slices: its backward writes the parts' gradients into one (vocab, width) tensor, where each slice's
    # would fill a zero tensor of that size
    sizes = [end - start for start, end in zip([0, *bounds[:-1]], bounds)]
    weights = lm_head.weight.split(sizes)
    biases = [None] * len(sizes) if lm_head.bias is None else lm_head.bias.split(sizes)
    head_weight = torch.cat([weights[0], cluster_head.weight])
    head_bias = None if biases[0] is None else torch.cat([biases[0], cluster_head.bias])
    head_logits = nn.functional.linear(features, head_weight, head_bias)
    loss = SoftmaxCrossEntropy.apply(head_logits, head_targets, divisor, ignore_index)
    for k, start in enumerate(bounds[:-1], start=1):
        rows = (cluster == k).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        logits = nn.functional.linear(features[rows], weights[k], biases[k])
        loss = loss + SoftmaxCrossEntropy.apply(logits, targets[rows] - start, divisor, ignore_index)
    return loss


def adaptive_log_probs(scores: torch.Tensor, cluster_scores: torch.Tensor, cutoffs: list[int]) -> torch.Tensor:
    """The adaptive softmax's log-probabilities of every token (fp32), from the output layer's scores (..., vocab) and
    the cluster scores (..., clusters): each cluster's log-softmax plus the head's log-probability of the cluster."""
    head = cutoffs[0]
    head_log_probs = torch.cat([scores[..., :head], cluster_scores], -1).float().log_softmax(-1)
    bounds = [*cutoffs, scores.shape[-1]]
    parts = [head_log_probs[..., :head]]
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        cluster = head_log_probs[..., head + k, None]
        parts.append(scores[..., start:end].float().log_softmax(-1) + cluster)
    return torch.cat(parts, -1)


class RNNLMTokenSpelling(nn.Module):
    """Character-aware tokens (Kim et al. 2016, https://arxiv.org/abs/1508.06615; CharacterBERT for word pieces): a
    CNN over each token's characters, max-pooled over them. The characters of every vocabulary entry are a buffer
    saved with the weights, so the model still reads only `input_ids` (pipelines, generate, the Hub)."""

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        # (vocab_size, max_token_chars) character ids, 0 = no character; filled by `set_token_spellings`.
        self.register_buffer("spellings", torch.zeros(config.vocab_size, config.max_token_chars, dtype=torch.long))
        self.char_embeddings = nn.Embedding(max(config.char_vocab_size, 1), config.char_embedding_size, padding_idx=0)
        self.conv = nn.Conv1d(config.char_embedding_size, config.char_cnn_filters, kernel_size=3, padding=1)

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        chars = self.spellings[input_ids]  # (batch, seq_len, max_token_chars)
        embedded = self.char_embeddings(chars.flatten(0, 1)).transpose(1, 2)  # (tokens, char_embedding, chars)
        features = torch.tanh(self.conv(embedded))  # (tokens, filters, chars)
        present = (chars.flatten(0, 1) != 0).unsqueeze(1)  # padding characters never win the max
        pooled = features.masked_fill(~present, -1.0).amax(-1)  # tanh >= -1: a token without characters gets -1s
        return pooled.view(*input_ids.shape, -1)  # (batch, seq_len, filters)


def spelling_table(tokens: list[str], max_chars: int) -> tuple[torch.Tensor, dict[str, int]]:
    """The character ids of every token, (len(tokens), max_chars), and the character vocabulary (0 is padding)."""
    characters = {char: i + 1 for i, char in enumerate(sorted({char for token in tokens for char in token}))}
    table = torch.zeros(len(tokens), max_chars, dtype=torch.long)
    for row, token in enumerate(tokens):
        ids = [characters[char] for char in token[:max_chars]]
        table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return table, characters


def blocked_scan(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, max_block: int, reverse: bool = False):
    """Every state of the linear recurrence h_t = a_t * h_{t-1} + b_t at once (a_t = exp(log_a_t) in (0, 1]), or with
    `reverse` of h_t = a_t * h_{t+1} + b_t from the end: (batch, seq_len, hidden) from (batch, seq_len, hidden) inputs
    and h0 (batch, hidden) or None (zeros), the state before the first step (after the last one with `reverse`).
    No autograd of its own: `LinearScan` is its gradient.

    Each block of steps is solved in closed form, h_t = A_t * (c + sum_{k<=t} b_k / A_k) with A_t the decay since the
    block's start and c the state entering it, by two triangular matrix products over all blocks at once; one
    multiply-add per block then carries the state from block to block (seq_len / block small steps, as a chunked
    scan does). Blocks have at most `max_block` steps (a divisor of seq_len where one is near, else the sequence is
    padded with identity steps), and `log_a` must keep a block's decay within fp32's range: log_a >= -60 / max_block.
    """
    batch, length, hidden = b.shape
    block = next((size for size in range(max_block, max_block // 2, -1) if length % size == 0), max_block)
    blocks = -(-length // block)
    if blocks * block != length:  # identity steps (a = 1, b = 0) up to whole blocks, after the end it starts from
        pad = (0, 0, blocks * block - length, 0) if reverse else (0, 0, 0, blocks * block - length)
        log_a, b = nn.functional.pad(log_a, pad), nn.functional.pad(b, pad)
    with torch.autocast(b.device.type, enabled=False):  # fp32 under any autocast dtype
        steps = torch.ones(block, block, dtype=b.dtype, device=b.device)  # (block, block): t >= k (t <= k reversed)
        steps = steps.triu() if reverse else steps.tril()
        decay = (steps @ log_a.view(batch, blocks, block, hidden)).exp_()  # A_t, from the block's start
        inner = steps @ (b.view(batch, blocks, block, hidden) / decay)  # (batch, blocks, block, hidden)
    if blocks > 1 or h0 is not None:  # the state entering each block, carried from block to block
        edge = 0 if reverse else -1  # the step that hands a block's state on
        block_decay = decay[:, :, edge]  # (batch, blocks, hidden)
        handed = block_decay * inner[:, :, edge]  # what a block hands on from its own inputs
        carries = torch.zeros_like(handed)
        order = list(range(blocks - 1, -1, -1) if reverse else range(blocks))
        if h0 is not None:
            carries[:, order[0]] = h0
        for j, after in zip(order, order[1:]):
            torch.addcmul(handed[:, j], block_decay[:, j], carries[:, j], out=carries[:, after])
        inner += carries.unsqueeze(2)
    h = inner.mul_(decay).view(batch, blocks * block, hidden)
    return h[:, blocks * block - length :] if reverse else h[:, :length]


class LinearScan(torch.autograd.Function):
    """`blocked_scan` with its gradient, which is the same scan run backwards: g_t = dL/dh_t + a_{t+1} g_{t+1} is the
    gradient of b_t, g_t * a_t * h_{t-1} that of log a_t. Autograd through the blocks would instead replay every
    product and carry, several times the scan's own cost."""

    @staticmethod
    def forward(ctx, log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, max_block: int) -> torch.Tensor:
        h = blocked_scan(log_a, b, h0, max_block)
        ctx.save_for_backward(log_a, h, h0)
        ctx.max_block = max_block
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        log_a, h, h0 = ctx.saved_tensors
        next_log_a = nn.functional.pad(log_a[:, 1:], (0, 0, 0, 1))  # a_{t+1}; nothing after the last step
        grad_b = blocked_scan(next_log_a, grad_h.contiguous(), None, ctx.max_block, reverse=True)
        grad_log_a = grad_b * log_a.exp()  # g_t * a_t, the gradient of h_{t-1}; times h_{t-1} below
        grad_h0 = None if h0 is None else grad_log_a[:, 0].clone()
        grad_log_a[:, 1:] *= h[:, :-1]
        grad_log_a[:, 0] *= 0 if h0 is None else h0
        return grad_log_a, grad_b, grad_h0, None


def linear_scan(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, max_block: int) -> torch.Tensor:
    """`blocked_scan` forward in time, differentiable (`LinearScan`): (batch, seq_len, hidden)."""
    return LinearScan.apply(log_a, b, h0, max_block)


class MinGRU(nn.Module):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?", https://arxiv.org/abs/2410.01201): a GRU whose gate and
    candidate read only the input, so the state enters linearly and training runs in parallel over time:

        z_t = sigmoid(W_z x_t + b_z),  h~_t = g(W_h x_t + b_h),  h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    with g(x) = x + 0.5 for x >= 0, sigmoid(x) below (the paper's positive activation). Every position's gate and
    candidate come from one matrix product; the linear recurrence is then a parallel scan (`linear_scan`) in fp32
    under any autocast dtype. (The paper's log-space scan, logcumsumexp, was 2-3x slower on a CPU and 1e-5 rather
    than 1e-7 from the recurrence: its log h_t is a difference of two large running sums.) A single token (decoding)
    is one O(1) step of the recurrence itself. The forget factor 1 - z_t is floored at e^-7.5 (z_t <= 0.99945, where
    sigmoid's gradient has long vanished), in both paths, so a block's decay stays within fp32's range. Padded
    positions get z = 0 and keep the state, which makes both directions of a padded batch exact without reversing
    rows. The interface is torch's `nn.GRU` (batch-first tensor or PackedSequence in, `(output, h_n)` out,
    `weight_ih_l0[_reverse]` rows [z; h]), so `RNNLMLayer` runs it like the built-in cells.
    """

    block = 8  # most steps `linear_scan` solves in closed form at once; 8 x 7.5 = 60 keeps e^60 within fp32
    min_log_forget = -7.5
    max_gate = math.log(math.expm1(-min_log_forget))  # the gate where 1 - z_t reaches that floor

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True, bidirectional: bool = False):
        super().__init__()
        if not batch_first:
            raise ValueError("MinGRU reads batch-first inputs only (batch_first=True).")
        self.input_size, self.hidden_size, self.bidirectional = input_size, hidden_size, bidirectional
        self.suffixes = ("_l0", "_l0_reverse") if bidirectional else ("_l0",)
        for suffix in self.suffixes:
            self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(2 * hidden_size, input_size)))
            self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(2 * hidden_size)))
        bound = 1 / math.sqrt(hidden_size)  # torch's own RNN default, until the model's _init_weights runs
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, inputs, hx: torch.Tensor | None = None):
        # inputs: (batch, seq_len, input_size) or a PackedSequence of them; hx: (num_directions, batch, hidden)
        mask = None
        if isinstance(inputs, PackedSequence):
            x, lengths = pad_packed_sequence(inputs, batch_first=True)  # (batch, max_len, input_size), rows unsorted
            mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (batch, max_len)
            mask = mask.to(x.device)
        else:
            x = inputs
        outputs, finals = [], []
        for direction, suffix in enumerate(self.suffixes):
            weight, bias = getattr(self, f"weight_ih{suffix}"), getattr(self, f"bias_ih{suffix}")
            h0 = None if hx is None else hx[direction]
            if direction == 0:
                output, h_n = self.run(x, mask, h0, weight, bias)
            else:  # the backward direction reads time reversed; padding (z = 0) keeps its state wherever it sits
                output, h_n = self.run(x.flip(1), None if mask is None else mask.flip(1), h0, weight, bias)
                output = output.flip(1)
            outputs.append(output)
            finals.append(h_n)
        output = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]  # (batch, seq_len, D * hidden)
        if mask is not None:  # back to the input's packed layout
            order = inputs.sorted_indices
            rows, sorted_lengths = (output, lengths) if order is None else (output[order], lengths[order.cpu()])
            data = pack_padded_sequence(rows, sorted_lengths, batch_first=True).data
            output = PackedSequence(data, inputs.batch_sizes, inputs.sorted_indices, inputs.unsorted_indices)
        return output, torch.stack(finals)  # h_n: (num_directions, batch, hidden), fp32

    def run(self, x, mask, h0, weight, bias) -> tuple[torch.Tensor, torch.Tensor]:
        """One direction: outputs (batch, seq_len, hidden) in the projection's dtype, final state (batch, hidden) fp32."""
        projected = nn.functional.linear(x, weight, bias)  # (batch, seq_len, 2 * hidden), bf16 under autocast
        gate, candidate = projected.float().chunk(2, -1)
        # With relu, not clamp / where, whose backward passes are several times slower on a CPU: min(x, c) = x - relu(x - c).
        # log(1 - z_t) = log sigmoid(-min(gate, max_gate)), floored at min_log_forget; g(x) = relu(x) + sigmoid(min(x, 0)).
        log_forget = torch.sigmoid((gate - self.max_gate).relu() - gate).log()
        positive = candidate.relu()
        update = torch.sigmoid(gate) * (positive + torch.sigmoid(candidate - positive))
        if mask is not None:  # a pad: z = 0, the state passes unchanged
            keep = mask.unsqueeze(-1)
            log_forget, update = log_forget * keep, update * keep
        h0 = None if h0 is None else h0.float()
        if x.shape[1] == 1:  # one token: the recurrence itself, O(1)
            h = update if h0 is None else log_forget.exp() * h0.unsqueeze(1) + update
        else:
            h = linear_scan(log_forget, update, h0, self.block)
        return h.to(projected.dtype), h[:, -1]


def cell_module(name: str) -> type[nn.Module]:
    """The module class a cell type names (`CellType.module`): torch's own, or one defined in this file."""
    return getattr(nn, name) if hasattr(nn, name) else globals()[name]


class RNNLMLayer(GradientCheckpointingLayer):
    """One recurrent layer, of the config's cell type (`CELL_TYPES`). Layers are separate modules so every layer's
    hidden states can be returned. The layer owns the conversion between the cache's state layout and its module's."""

    def __init__(self, config: RNNLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.cell_type = config.cell_type
        self.num_states = config.num_states
        # Separate directions: each direction's stack has its own unidirectional layers (the model runs them).
        joint = config.bidirectional and not config.separate_directions
        self.module_directions = 2 if joint else 1  # directions inside this module (1 per stack when separate)
        self.weight_drop = config.weight_drop
        extra = {"nonlinearity": config.rnn_nonlinearity} if config.cell_type == "rnn" else {}
        self.weight_drop_on = config.cell.weight_drop_on
        self.rnn = cell_module(config.cell.module)(
            input_size=config.layer_input_size(layer_idx),
            hidden_size=config.layer_hidden_sizes[layer_idx],
            batch_first=True,
            bidirectional=joint,
            **extra,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        state: torch.Tensor | None = None,
        packing: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden_states: (batch, seq_len, input_size), or packed data (total_tokens, input_size) with its `packing`
        # layout: plain tensors, so reentrant gradient checkpointing sees (and recomputes) this layer.
        # state: (batch, num_states * num_directions, hidden)
        inputs = PackedSequence(hidden_states, *packing) if packing is not None else hidden_states
        output, hx = self.run_rnn(inputs, self.to_module_state(state))
        output = output.data if packing is not None else output
        return output, self.from_module_state(hx)

    def to_module_state(self, state: torch.Tensor | None):
        """The cache layout (batch, num_states * num_directions, hidden) as torch's: (num_directions, batch, hidden)
        per state tensor, a tuple (h, c) for LSTM."""
        if state is None:
            return None
        hx = state.transpose(0, 1).contiguous()  # (num_states * num_directions, batch, hidden)
        if self.num_states == 1:
            return hx
        return tuple(part.contiguous() for part in hx.split(self.module_directions))

    def from_module_state(self, hx) -> torch.Tensor:
        """torch's state back in the cache layout (batch, num_states * num_directions, hidden)."""
        hx = torch.cat(hx, dim=0) if isinstance(hx, tuple) else hx
        return hx.transpose(0, 1)

    def run_rnn(self, inputs, hx):
        if not (self.training and self.weight_drop > 0):
            return self.rnn(inputs, hx)
        # DropConnect on W_hh (AWD-LSTM; the table's `weight_drop_on`): the dropped matrices stand in for this call only, through functional_call,
        # so the fused kernel still runs, gradients reach the raw weights and the state dict keeps its plain names.
        dropped = {
            name: nn.functional.dropout(param, self.weight_drop, training=True)
            for name, param in self.rnn.named_parameters()
            if name.startswith(self.weight_drop_on)
        }
        return torch.func.functional_call(self.rnn, dropped, (inputs, hx))


class RNNLMPreTrainedModel(PreTrainedModel):
    config_class = RNNLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RNNLMLayer"]
    # The state cannot be rolled back token by token: generate() then refuses assisted decoding cleanly.
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a plain DynamicCache: the first forward creates an RNNLMCache.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Through `transformers.initialization`, which skips tensors already loaded by from_pretrained.
        bound = self.config.initializer_range
        if isinstance(module, RNNLMCRF):  # no preference among tags or moves until trained
            for param in module.parameters():
                init.zeros_(param)
            for buffer, penalty in zip(
                (module.start_penalty, module.transition_penalty, module.end_penalty), module.penalties()
            ):
                init.copy_(buffer, penalty)
        elif isinstance(module, RNNLMLayerMix):  # the plain average of the layers
            init.zeros_(module.layer_weights)
            init.ones_(module.gamma)
        elif isinstance(module, RNNLMTokenSpelling):  # no characters until `set_token_spellings`
            init.zeros_(module.spellings)
        elif isinstance(module, nn.Conv1d):  # the char CNN: torch's own default, U(+-1/sqrt(fan_in)) for both
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.in_channels * module.kernel_size[0]
            init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, (nn.Embedding, nn.Linear)):
            init.uniform_(module.weight, -bound, bound)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            loaded = getattr(module.weight, "_is_hf_initialized", False)  # a row loses the flag: check the whole
            if getattr(module, "padding_idx", None) is not None and not loaded:  # the char CNN's padding reads zeros
                init.zeros_(module.weight[module.padding_idx])
        elif type(module).__name__ in CELL_OF_MODULE:  # every cell of the table, the head BiLSTM included
            for name, param in module.named_parameters():
                if self.config.init_recurrent_uniform:  # Zaremba et al. 2014: every weight ~ U(-0.1, 0.1)
                    init.uniform_(param, -bound, bound)
                elif name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)  # keeps gradients from exploding/vanishing at init (Saxe et al. 2014)
                else:
                    init.zeros_(param)
                # Forget-gate bias 1 lets an LSTM remember by default (Jozefowicz et al. 2015). A slice loses the
                # "already loaded" flag, so check it on the whole tensor.
                cell = CELL_OF_MODULE.get(type(module).__name__)
                is_forget_bias = cell is not None and cell.forget_gate is not None and name.startswith("bias_ih")
                loaded = getattr(param, "_is_hf_initialized", False)
                if is_forget_bias and not self.config.init_recurrent_uniform and not loaded:
                    gate = cell.gates.index(cell.forget_gate)
                    init.constant_(param.view(len(cell.gates), module.hidden_size)[gate], 1.0)

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        # The head RNN's own embeddings (`head_embedding_size`) read the same token ids: they follow the vocabulary.
        head_rnn = getattr(self, "head_rnn", None)
        if head_rnn is not None and head_rnn.embeddings is not None:
            head_rnn.embeddings = self._get_resized_embeddings(
                head_rnn.embeddings, embeddings.num_embeddings, mean_resizing=mean_resizing
            )
        return embeddings

    def save_pretrained(self, *args, **kwargs):
        # transformers writes only the saved class into `auto_map`; write them all so the folder loads through
        # every Auto class as Hub code. Entries already there (e.g. "org/repo--module.Class") win.
        if self._auto_class is not None:
            self.config.auto_map = {**auto_map(), **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(*args, **kwargs)


class RNNLMModel(RNNLMPreTrainedModel):
    """Embeddings followed by stacked recurrent layers; returns every position's last-layer state."""

    def __init__(self, config: RNNLMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.input_size)
        self.spelling = RNNLMTokenSpelling(config) if config.char_cnn_filters else None
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([RNNLMLayer(config, i) for i in range(config.num_hidden_layers)])
        # ELMo's backward LM: its own stack, run over every row reversed (`separate_directions`).
        self.reverse_layers = (
            nn.ModuleList([RNNLMLayer(config, i) for i in range(config.num_hidden_layers)])
            if config.separate_directions
            else None
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def check_token_ids(self, input_ids: torch.LongTensor) -> None:
        # nn.Embedding would fail deep inside torch (or on CUDA, with a device-side assert): fail here, clearly.
        # Reading the ids on the host stalls a GPU training step, so CUDA training skips the check (the training
        # scripts compare tokenizer and embedding sizes once, up front); inference and CPU training keep it.
        # A compiled step skips it too: the check is a data-dependent branch (a graph break and a host sync).
        if input_ids.numel() == 0 or (self.training and input_ids.is_cuda) or torch.compiler.is_compiling():
            return
        low, high = torch.aminmax(input_ids)
        vocab_size = self.embeddings.num_embeddings
        if low < 0 or high >= vocab_size:
            bad = int(low) if low < 0 else int(high)
            raise ValueError(
                f"input_ids contain token id {bad}, outside the model's vocabulary [0, {vocab_size}). The tokenizer "
                "and the model disagree: use the tokenizer saved with the model, or call "
                "model.resize_token_embeddings(len(tokenizer)) after adding tokens."
            )

    def set_token_spellings(self, tokens: list[str]) -> None:
        """Store the spelling of every vocabulary entry (`tokenizer.convert_ids_to_tokens(range(vocab_size))`) for
        the character CNN; `config.char_vocab_size` must cover its characters (`spelling_table` counts them)."""
        table, characters = spelling_table(tokens, self.config.max_token_chars)
        if len(characters) + 1 > self.config.char_vocab_size or len(tokens) != self.config.vocab_size:
            raise ValueError(
                f"{len(tokens)} tokens with {len(characters)} distinct characters do not fit vocab_size="
                f"{self.config.vocab_size}, char_vocab_size={self.config.char_vocab_size}: set char_vocab_size to "
                "len(spelling_table(tokens, max_token_chars)[1]) + 1 before building the model."
            )
        self.spelling.spellings.copy_(table)

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        embeds = self.embeddings(input_ids)  # (batch, seq_len, input_size)
        p = self.config.dropout_embedding
        if self.training and p > 0:
            # Embedding dropout (AWD-LSTM's `dropoute`): a dropped word type is zero at every occurrence in this batch.
            keep = embeds.new_empty(self.embeddings.num_embeddings).bernoulli_(1 - p) / (1 - p)  # (vocab_size,)
            embeds = embeds * keep[input_ids].unsqueeze(-1)
        if self.spelling is not None:  # (batch, seq_len, input_size + char_cnn_filters)
            embeds = torch.cat([embeds, self.spelling(input_ids)], -1)
        return embeds

    @staticmethod
    def holds_state(cache: Cache | None, layer_idx: int = 0) -> bool:
        """Whether `cache` holds a state for this layer (a new cache, or none, starts from zeros)."""
        # Read the layer directly: `Cache.get_recurrent_state` only exists from transformers 5.21.
        return cache is not None and cache.layers[layer_idx].has_previous_state[0]

    def read_state(self, cache: Cache | None, layer_idx: int) -> torch.Tensor | None:
        if not self.holds_state(cache, layer_idx):
            return None
        state = cache.layers[layer_idx].recurrent_states[0]
        # The next write updates this buffer in place: when training through a carried state (truncated BPTT),
        # autograd must hold its own copy.
        return state.clone() if torch.is_grad_enabled() else state

    def write_state(self, cache: Cache | None, layer_idx: int, state: torch.Tensor) -> None:
        if cache is None:
            return
        layer = cache.layers[layer_idx]
        # The cache is a truncation point for backprop (truncated BPTT), hence detach.
        layer.update_recurrent_state(state.detach(), 0)
        # The built-in layer only marks a previous state from `update_conv_state`; a pure RNN has no conv state.
        layer.has_previous_state[0] = True

    def prepare_cache(self, cache: Cache | None, use_cache: bool, batch_size: int) -> Cache | None:
        if self.config.bidirectional:
            if cache is not None:
                raise ValueError("A bidirectional RNN-LM has no recurrent cache: pass cache=None, use_cache=False.")
            return None
        if use_cache and cache is None:
            cache = RNNLMCache(self.config)
        if cache is not None and (len(cache.layers) != self.config.num_hidden_layers or not all(cache.is_linear)):
            raise ValueError(
                f"The cache must hold {self.config.num_hidden_layers} recurrent layers: build it with "
                "RNNLMCache(model.config) or DynamicCache(config=model.config), or pass the `cache` returned by a "
                "previous call."
            )
        state = self.read_state(cache, 0)
        if state is not None and state.shape[0] != batch_size:
            raise ValueError(
                f"The cache holds the state of {state.shape[0]} rows but the inputs have {batch_size}: continue a cache "
                "with the batch it was built for, or start a new one (cache=None)."
            )
        return cache

    def is_decoding_step(self, num_new: int, attention_mask: torch.Tensor | None, cache: Cache | None) -> bool:
        # generate()'s per-token call: one token per row, no mask (its entry is always 1), a state to continue from.
        return (
            num_new == 1
            and attention_mask is None
            and self.holds_state(cache)
            and not self.training
            and not torch.is_grad_enabled()  # the states are overwritten in place, so nothing may hold them for backward
        )

    def decode_step(self, inputs_embeds: torch.Tensor, cache: Cache, use_cache: bool | None, return_dict: bool):
        """The lean path of one decoding step: no padding, dropout or per-layer outputs to handle, the states updated
        in place. It has no host sync and no data-dependent branch, so the whole step compiles as one graph."""
        hidden_states = inputs_embeds  # (batch, 1, input_size)
        for layer_idx, layer in enumerate(self.layers):
            state = cache.layers[layer_idx].recurrent_states[0]  # (batch, num_states, hidden)
            hidden_states, new_state = layer(hidden_states, state)
            state.copy_(new_state)
        if isinstance(cache, RNNLMCache):
            cache.advance(1)
        output = RNNLMModelOutput(last_hidden_state=hidden_states, **{CACHE_FIELD: cache if use_cache else None})
        return output if return_dict else output.to_tuple()

    def drop_inputs(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The dropouts on what the first layer reads: plain, then locked (one mask per sequence)."""
        return locked_dropout(self.dropout(inputs_embeds), self.config.dropout_input, self.training)

    def run_stack(self, layers: nn.ModuleList, hidden_states: torch.Tensor, cache, packer, output_hidden_states):
        """One direction's layers over (batch, seq_len, input_size) inputs: the last layer's output after its dropout
        (batch, seq_len, size), every layer's output before it (when asked) and every layer's final state."""
        packing = None
        if packer is not None:
            hidden_states, packing = packer.pack(hidden_states)  # (total_tokens, input_size)
        layer_outputs, final_states = (), ()
        for layer_idx, layer in enumerate(layers):
            old_state = self.read_state(cache, layer_idx)
            hidden_states, state = layer(hidden_states, old_state, packing)  # positional: gradient checkpointing
            if packer is not None:
                state = packer.final_state(state, old_state)
            self.write_state(cache, layer_idx, state)
            final_states += (state,)
            if output_hidden_states:
                layer_outputs += (packer.unpack(hidden_states, packing) if packer is not None else hidden_states,)
            is_last = layer_idx == len(layers) - 1
            hidden_states = self.dropout(hidden_states)
            locked = self.config.dropout_output if is_last else self.config.dropout_hidden
            hidden_states = locked_dropout(hidden_states, locked, self.training, packing)
        if packer is not None:
            hidden_states = packer.unpack(hidden_states, packing)  # (batch, seq_len, size)
        return hidden_states, layer_outputs, final_states

    def add_backward_direction(
        self, inputs_embeds, packer, output_hidden_states, forward_last, forward_outputs, forward_states
    ):
        """Run the backward stack over every row reversed (padding stays in place) and concatenate each of its
        outputs, turned back, after the forward one's, as a joint bidirectional layer lays them out."""
        if packer is not None:
            reverse = packer.reversal_index()  # reversing twice restores the order
        else:
            batch, seq_len = inputs_embeds.shape[:2]
            reverse = torch.arange(seq_len, device=inputs_embeds.device).flip(0).expand(batch, seq_len)

        def turn(x: torch.Tensor) -> torch.Tensor:
            return x.gather(1, reverse.unsqueeze(-1).expand_as(x))

        hidden_states = self.drop_inputs(turn(inputs_embeds))
        last, outputs, states = self.run_stack(self.reverse_layers, hidden_states, None, packer, output_hidden_states)
        # States: (h_fwd, h_bwd, c_fwd, c_bwd) along dim 1, torch's layout for a bidirectional layer.
        return (
            torch.cat([forward_last, turn(last)], -1),
            tuple(torch.cat([f, turn(b)], -1) for f, b in zip(forward_outputs, outputs)),
            tuple(torch.stack([f, b], 2).flatten(1, 2) for f, b in zip(forward_states, states)),
        )

    def prefix_eos(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None):
        """`start_after_eos`: the embedded `<eos>` before every row (batch, 1 + seq_len, input_size), its mask entry 1."""
        batch = inputs_embeds.shape[0]
        eos = torch.full((batch, 1), self.config.eos_token_id, device=inputs_embeds.device)
        inputs_embeds = torch.cat([self.embed(eos), inputs_embeds], 1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(batch, 1), attention_mask], 1)
        return inputs_embeds, attention_mask

    @staticmethod
    def strip_eos(hidden_states: torch.Tensor, all_hidden_states: tuple | None):
        """The outputs without the prefixed `<eos>` position: the caller's positions only."""
        all_hidden_states = tuple(h[:, 1:] for h in all_hidden_states) if all_hidden_states is not None else None
        return hidden_states[:, 1:], all_hidden_states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_final_states: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RNNLMModelOutput | tuple:
        r"""
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real tokens, 0 for padding. Padded positions never update the state (the batch is packed), so
            left- and right-padded rows give the same results as unpadded ones; their outputs are zeros.
        cache (`Cache`, *optional*):
            Recurrent state from a previous call (`DynamicCache` of one recurrent layer per hidden layer, each state
            of shape `(batch_size, num_states, hidden_size)`, `num_states` = 2 for LSTM `(h, c)`, else 1). The call
            continues from it, so the new tokens cost one recurrent step each. The stored state is detached.
        output_final_states (`bool`, *optional*, defaults to `False`):
            Also return every layer's state after the last real token of each row (`final_states`). Off by default:
            a tuple indexed by layer is not a per-row output that pipelines can split into batch rows.
        """
        cache = pop_cache(cache, kwargs, self)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if inputs_embeds is None:
            self.check_token_ids(input_ids)
            inputs_embeds = self.embed(input_ids)  # (batch, seq_len, input_size)
        elif self.spelling is not None and inputs_embeds.shape[-1] != self.config.layer_input_size(0):
            raise ValueError(
                "With char_cnn_filters the first layer reads each token's embedding and its spelling's features: "
                "pass input_ids, or inputs_embeds from model.model.embed(input_ids)."
            )
        cache = self.prepare_cache(cache, bool(use_cache) or cache is not None, inputs_embeds.shape[0])

        num_new = inputs_embeds.shape[1]
        if self.is_decoding_step(num_new, attention_mask, cache) and not (output_hidden_states or output_final_states):
            return self.decode_step(inputs_embeds, cache, use_cache, return_dict)
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[1] < num_new:
                raise ValueError(
                    f"`attention_mask` has shape {tuple(attention_mask.shape)} but the inputs are "
                    f"{tuple(inputs_embeds.shape[:2])}: pass one 0/1 mask entry per input position, (batch, seq_len)."
                )
            # generate() passes the full running mask with only the new tokens: keep the part of this call.
            attention_mask = attention_mask[:, -num_new:]
        # A fresh state first reads an <eos>: stream training saw every line start after one (`start_after_eos`).
        prefixed = self.config.start_after_eos and not self.holds_state(cache)
        if prefixed:
            inputs_embeds, attention_mask = self.prefix_eos(inputs_embeds, attention_mask)
        packer = None
        if attention_mask is not None and not bool(attention_mask.all()):
            packer = PaddingPacker(attention_mask)

        hidden_states, layer_outputs, final_states = self.run_stack(
            self.layers, self.drop_inputs(inputs_embeds), cache, packer, output_hidden_states
        )
        if self.reverse_layers is not None:
            hidden_states, layer_outputs, final_states = self.add_backward_direction(
                inputs_embeds, packer, output_hidden_states, hidden_states, layer_outputs, final_states
            )
        all_hidden_states = (inputs_embeds, *layer_outputs) if output_hidden_states else None
        if prefixed:  # outputs only for the caller's positions
            hidden_states, all_hidden_states = self.strip_eos(hidden_states, all_hidden_states)
        if isinstance(cache, RNNLMCache):
            cache.advance(num_new)

        output = RNNLMModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            final_states=final_states if output_final_states else None,
            **{CACHE_FIELD: cache if use_cache else None},
        )
        return output if return_dict else output.to_tuple()


# The pipeline task of every head but the LM, for the message below.
PIPELINE_TASKS = {
    "RNNLMModel": "feature-extraction",
    "RNNLMForTokenClassification": "token-classification",
    "RNNLMForSequenceClassification": "text-classification",
}


class NotACausalLMError(Exception):
    """A saved bidirectional encoder or classifier asked to load as a causal LM. Not a `ValueError` on purpose:
    `pipeline("text-generation", model=folder)` catches those from every class it tries, and would bury this one line
    in a page of concatenated tracebacks."""


def check_not_another_head(config: RNNLMConfig) -> None:
    """Name the right pipeline when a folder saved from a bidirectional tagger, classifier or encoder (which no
    causal LM can be built from) is loaded as a causal LM. Unidirectional heads stay loadable, as transformers'
    own models allow (their encoder, with a new LM head)."""
    saved_as = [name for name in config.architectures or [] if name in PIPELINE_TASKS]
    if not saved_as or not config.bidirectional or config.separate_directions:
        return
    head = saved_as[0]
    auto_class = next(name for name, model_class in MODEL_CLASSES.items() if model_class.__name__ == head)
    source = f"'{config.name_or_path}'" if config.name_or_path else "This config"
    raise NotACausalLMError(
        f"{source} holds a bidirectional {head}, which cannot generate text (it reads the whole input in both "
        f"directions): load it with pipeline('{PIPELINE_TASKS[head]}', model=...) or {auto_class}, not as a causal LM."
    )


class RNNLMGenerationConfig(GenerationConfig):
    """transformers' `GenerationConfig`, derived from a model config without a false warning."""

    @classmethod
    def from_model_config(cls, model_config) -> GenerationConfig:
        # transformers copies the model config's `output_hidden_states` and validates it before it turns on
        # `return_dict_in_generate` for it, so a model config with output_hidden_states=True warned "generation
        # flags are not valid and may be ignored" at every model built. Turn it on first; the result is the same.
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        if any(config_dict.get(flag) for flag in cls.extra_output_flags):
            config_dict = {**config_dict, "return_dict_in_generate": True}
        return super().from_model_config(config_dict)


class RNNLMForCausalLM(RNNLMPreTrainedModel, GenerationMixin):
    """RNN language model: the softmax over the vocabulary reads the last layer's state at every position. With
    `bidirectional` and `separate_directions` it is a bidirectional LM (ELMo): a forward and a backward LM trained
    together, sharing embeddings and softmax, each predicting the next token in its own reading direction."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    generation_config_class = RNNLMGenerationConfig
    # `self.loss_function` is this one unless set on the model (transformers' property reads `_loss_function` first).
    _loss_function = staticmethod(causal_lm_loss)

    def __init__(self, config: RNNLMConfig):
        check_not_another_head(config)
        config.check_causal_lm()
        super().__init__(config)
        self.model = RNNLMModel(config)
        # Project hidden -> embedding size so the softmax can share the embedding matrix (Press & Wolf 2017).
        self.projection = nn.Linear(config.lm_feature_size, config.input_size) if config.needs_projection else None
        self.lm_head = nn.Linear(config.lm_input_size, config.vocab_size)
        # The adaptive softmax's cluster scores: the head softmax's entries beside the frequent tokens.
        cutoffs = config.softmax_cutoffs
        self.cluster_head = nn.Linear(config.lm_input_size, len(cutoffs)) if cutoffs else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def generate(self, *args, **kwargs):
        # Fail before generate() goes deep: these modes need to roll a cache back, which a recurrent state can't.
        generation_config = kwargs.get("generation_config") or self.generation_config
        if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens") is not None:
            raise ValueError(
                "Assisted/speculative decoding is not supported by RNN-LM: a recurrent state cannot be rolled back "
                "to reject draft tokens. Use greedy search, sampling or beam search."
            )
        if (kwargs.get("penalty_alpha") or getattr(generation_config, "penalty_alpha", None)) or kwargs.get(
            "dola_layers"
        ):
            raise ValueError(
                "Contrastive search and DoLa are not supported by RNN-LM (they are Hub-hosted strategies that need "
                "attention states). Use greedy search, sampling (do_sample=True, temperature/top_k/top_p) or beam "
                "search (num_beams>1)."
            )
        if self.config.bidirectional:
            raise ValueError(
                "A bidirectional LM cannot generate: its backward direction reads the text from the end. Score text "
                "with it, or load its weights into a tagging or classification head; train a unidirectional LM "
                "(bidirectional=False) to generate."
            )
        prompt = args[0] if args else kwargs.get("inputs", kwargs.get("input_ids"))
        mask = kwargs.get("attention_mask")
        if isinstance(prompt, torch.Tensor) and prompt.dim() == 2:
            if prompt.shape[1] == 0:
                raise ValueError(
                    "generate() got an empty prompt: an RNN-LM needs at least one token to start from; pass "
                    "[[bos_token_id]] to sample from the start of a text."
                )
            if mask is not None and tuple(mask.shape) != tuple(prompt.shape):
                raise ValueError(
                    f"`attention_mask` has shape {tuple(mask.shape)} but the prompt is {tuple(prompt.shape)}: pass the "
                    "mask the tokenizer returned with the prompt, one entry per token. To continue from a returned "
                    "cache, pass the whole sequence so far (result.sequences) with its whole mask."
                )
        # Dynamo refuses nn.RNN/LSTM/GRU modules unless told otherwise: a compiled decoding step (CUDA, or a
        # `compile_config`) traces our layers' cuDNN/oneDNN calls as single ops, the same kernels as eager.
        with torch._dynamo.config.patch(allow_rnn=True):
            return super().generate(*args, **kwargs)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs):
        # generate() builds no cache for us (the first forward makes an RNNLMCache), but the compiled decoding step
        # needs a compileable cache before the prefill: `cache_implementation="static"` asks for it.
        if (
            generation_config.cache_implementation == "static"
            and generation_config.use_cache is not False
            and model_kwargs.get(CACHE_FIELD) is None
        ):
            model_kwargs[CACHE_FIELD] = RNNLMStaticCache(self.config)
            return
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        is_first_iteration: bool = False,
        **kwargs,
    ) -> dict:
        # Both names in the signature: generate() checks its kwargs against it (`past_key_values` before 5.24).
        cache = cache if cache is not None else past_key_values
        kwargs[CACHE_FIELD] = cache
        if is_first_iteration and cache is not None:
            # Continuing from a returned cache: transformers cuts what the cache has read off the prompt itself on
            # some releases (5.17, 5.25: off any prompt as long as its mask, so a new-tokens-only prompt came out
            # empty) and never on others (5.24, for a recurrent cache). Decide here, the same on every release.
            prompt = inputs_embeds if inputs_embeds is not None else input_ids
            next_sequence_length = unread_length(prompt.shape[1], cache)
        # The mask is not passed up: transformers < 5.24 turns it into a 4D attention mask for a compileable cache.
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        # After the prefill, generate() feeds one new token per row, whose mask entry is always 1: drop the growing
        # mask (as Mamba does), so the step takes the lean path and a compiled step sees the same shapes every token.
        decoding = kwargs.get("use_cache") and not is_first_iteration
        model_inputs["attention_mask"] = None if decoding else attention_mask
        return model_inputs

    def lm_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What the output layer reads: one direction's features, through the projection to the tied embedding size
        when there is one."""
        return hidden_states if self.projection is None else self.projection(hidden_states)

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The output layer: one direction's features (..., lm_feature_size) to logits (..., vocab_size); with an
        adaptive softmax, the log-probabilities of every token. Every path to logits goes through here."""
        features = self.lm_features(hidden_states)
        scores = self.lm_head(features)
        if self.cluster_head is None:
            return scores
        return adaptive_log_probs(scores, self.cluster_head(features), self.config.softmax_cutoffs)

    def lm_loss(self, hidden_states: torch.Tensor, logits: torch.Tensor | None, labels, **kwargs) -> torch.Tensor:
        """The LM loss of one direction: from its logits, or, in an adaptive-softmax training step (no logits), from
        the features, scoring each position's target cluster only."""
        if logits is not None:
            return self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        features = self.lm_features(hidden_states)
        return adaptive_softmax_loss(
            features, self.lm_head, self.cluster_head, self.config.softmax_cutoffs, labels, **kwargs
        )

    @staticmethod
    def backward_targets(input_ids: torch.LongTensor | None, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The backward LM's targets when no `labels` are given (stream batches carry only `shift_labels`, the next
        tokens; the trainer's evaluation): the inputs, padding ignored."""
        if input_ids is None:
            raise ValueError(
                "A bidirectional LM trained from `inputs_embeds` needs `labels` for its backward direction."
            )
        return input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> "RNNLMCausalLMOutput | tuple":
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Targets for language modelling. They are **shifted inside the model**, so `labels = input_ids` works;
            `-100` is ignored. The loss is the cross-entropy averaged over the non-ignored tokens (perplexity is its
            exp). Pass `shift_labels` (already the next tokens, not shifted again) to predict the token after the
            last input too, as truncated-BPTT training does.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            Compute logits for the last `logits_to_keep` positions only (0 = all); generation needs just the last.
        """
        cache = pop_cache(cache, kwargs, self)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # (batch, seq_len, output_size)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        # A bidirectional LM: the forward half predicts the next token, the backward half the previous one.
        forward_states, *backward_states = hidden_states[:, keep].split(self.config.lm_feature_size, dim=-1)
        backward_states = backward_states[0] if backward_states else None
        has_labels = labels is not None or kwargs.get("shift_labels") is not None
        # An adaptive softmax trains without the whole vocabulary's logits (that is what it saves).
        with_logits = self.cluster_head is None or not (self.training and has_labels)
        logits = self.logits(forward_states) if with_logits else None  # (batch, seq_len, vocab_size)
        logits_backward = self.logits(backward_states) if with_logits and backward_states is not None else None

        loss = loss_forward = loss_backward = None
        if has_labels:
            for name, value in (("labels", labels), ("shift_labels", kwargs.get("shift_labels"))):
                if value is not None:
                    check_labels(value, outputs.last_hidden_state.shape[:2], name)
            # **kwargs carries num_items_in_batch from Trainer, so gradient accumulation averages per token.
            loss = self.lm_loss(forward_states, logits, labels, **kwargs)
            if backward_states is not None:
                # Read right to left, the previous token is the next one: flip time and shift as usual.
                targets = labels if labels is not None else self.backward_targets(input_ids, attention_mask)
                kwargs.pop("shift_labels", None)
                loss_forward = loss
                flipped = None if logits_backward is None else logits_backward.flip(1)
                loss_backward = self.lm_loss(backward_states.flip(1), flipped, targets.flip(1), **kwargs)
                loss = (loss_forward + loss_backward) / 2

        output = RNNLMCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            # The features the softmax reads, after output dropout: activation regularisation (AR) needs them.
            last_hidden_state=outputs.last_hidden_state if output_hidden_states else None,
            logits_backward=logits_backward,
            loss_forward=loss_forward,
            loss_backward=loss_backward,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()

    # generate() inspects forward's signature at every token for Hub-code models (its `cache_position` check):
    # a precomputed one spares unwrapping the decorators each time.
    forward.__signature__ = inspect.signature(forward)


class RNNLMLayerMix(nn.Module):
    """ELMo's scalar mix (Peters et al. 2018, eq. 1): `gamma * sum_l softmax(w)_l h_l` over the recurrent layers'
    outputs, learned by the task, starting as their plain average."""

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(config.num_hidden_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, per_layer: tuple[torch.Tensor, ...]) -> torch.Tensor:
        weights = self.layer_weights.softmax(0)
        return self.gamma * sum(weight * features for weight, features in zip(weights, per_layer))


class RNNLMHeadRNN(nn.Module):
    """ELMo's and Flair's task model (`head_rnn_size`): a one-layer BiLSTM over the encoder's features, trained for
    the task, with `head_embedding_size` also over its own token embeddings (ELMo's `[x_k; ELMo_k]`). Padding never
    enters it: padded rows are packed, as in the encoder."""

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        size = config.head_embedding_size
        self.embeddings = nn.Embedding(config.vocab_size, size) if size else None
        self.dropout = nn.Dropout(config.head_dropout)
        self.rnn = nn.LSTM(config.output_size + size, config.head_rnn_size, batch_first=True, bidirectional=True)

    def forward(
        self, features: torch.Tensor, attention_mask: torch.Tensor | None, input_ids: torch.LongTensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs (batch, seq_len, 2 * head_rnn_size), zeros at padding, and each row's final h of both
        directions (forward after its last real token, backward after its first), (batch, 2 * head_rnn_size)."""
        if self.embeddings is not None:
            if input_ids is None:
                raise ValueError(
                    "`head_embedding_size` gives the head RNN its own token embeddings, which read `input_ids`: pass "
                    "input_ids, not inputs_embeds."
                )
            tokens = self.dropout(self.embeddings(input_ids[:, -features.shape[1] :]))
            features = torch.cat([features, tokens], -1)  # (batch, seq_len, output_size + head_embedding_size)
        if attention_mask is None or bool(attention_mask.all()):
            outputs, (last, _) = self.rnn(features)
            return outputs, last.transpose(0, 1).flatten(1)
        packer = PaddingPacker(attention_mask)
        data, packing = packer.pack(features)
        outputs, (last, _) = self.rnn(PackedSequence(data, *packing))
        last = packer.final_state(last.transpose(0, 1), None)  # rows without a real token: zeros
        return packer.unpack(outputs.data, packing), last.flatten(1)


# A forbidden tag move's score: exp(-1e4) is 0 in float32, yet it stays finite (no inf - inf = nan in the recursions).
FORBIDDEN_MOVE = -1e4


def allowed_tag_moves(labels: list[str], scheme: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which first tags (L,), tag-to-tag moves (L, L: from row to column) and last tags (L,) a scheme allows: an
    `I-X` (IOB1: a `B-X`) must continue an X chunk; in BIOES a chunk opened by `B-X` goes on with `I-X` and closes
    with `E-X`, and nothing else may follow or end it. `None` allows every move."""
    size = len(labels)
    if scheme is None:
        everything = torch.ones(size, dtype=torch.bool)
        return everything, torch.ones(size, size, dtype=torch.bool), everything
    tags = []
    for label in labels:
        prefix, _, kind = label.partition("-")
        if label != "O" and not (kind and prefix in CRF_SCHEMES[scheme]):
            raise ValueError(
                f"label {label!r} is no {scheme} tag (O or {'/'.join(CRF_SCHEMES[scheme])}-TYPE): set crf_scheme to "
                "the scheme of the labels, or to None for a CRF without constraints."
            )
        tags.append((prefix, kind))

    def allowed(previous: tuple[str, str] | None, tag: tuple[str, str]) -> bool:
        in_chunk = previous is not None and previous[0] in ("B", "I")
        continues = in_chunk and previous[1] == tag[1]
        if scheme == "IOB2":
            return tag[0] != "I" or continues
        if scheme == "IOB1":
            return tag[0] != "B" or continues
        return (tag[0] in ("I", "E") and continues) if in_chunk else tag[0] in ("O", "B", "S")

    start = torch.tensor([allowed(None, tag) for tag in tags])
    moves = torch.tensor([[allowed(previous, tag) for tag in tags] for previous in tags])
    end = torch.tensor([scheme != "BIOES" or prefix not in ("B", "I") for prefix, _ in tags])
    return start, moves, end


class RNNLMCRF(nn.Module):
    """A linear-chain CRF over the tags (Lafferty et al. 2001; the BiLSTM-CRF of Huang et al. 2015 and Lample et al.
    2016): learned start, transition and end scores, the moves of `crf_scheme` forbidden. Written here rather than
    taken from `pytorch-crf`, because this file ships as Hub code with torch and transformers as its only imports.

    Positions labelled -100 (unlabelled sub-words) are latent: the likelihood sums over their tags, so decoding every
    token, as the pipeline does, matches what was trained. Padding (`mask` 0) is skipped on either side.
    """

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        size = config.num_labels
        self.start_scores = nn.Parameter(torch.zeros(size))
        self.transition_scores = nn.Parameter(torch.zeros(size, size))  # [from, to]
        self.end_scores = nn.Parameter(torch.zeros(size))
        self.labels, self.scheme = [config.id2label[i] for i in range(size)], config.crf_scheme
        for name, penalty in zip(("start", "transition", "end"), self.penalties()):
            # Derived from the config (labels and scheme), so never saved.
            self.register_buffer(f"{name}_penalty", penalty, persistent=False)

    def penalties(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The start, transition and end penalties of `crf_scheme`: 0 where a move is allowed, else FORBIDDEN_MOVE.
        `_init_weights` writes them again: from_pretrained builds the module on the meta device, which leaves
        unsaved buffers uninitialised."""
        return tuple(
            torch.where(allowed, 0.0, FORBIDDEN_MOVE) for allowed in allowed_tag_moves(self.labels, self.scheme)
        )

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start (L,), transitions (L, L), end (L,)), forbidden moves included at FORBIDDEN_MOVE."""
        return (
            self.start_scores + self.start_penalty,
            self.transition_scores + self.transition_penalty,
            self.end_scores + self.end_penalty,
        )

    def forward_scores(self, emissions: torch.Tensor, mask: torch.Tensor, reduce) -> torch.Tensor:
        """(batch, seq_len, L): the summed (`reduce=torch.logsumexp`) or best (max) score of the paths that end in each
        tag at each position, its emission included. Padding carries the scores over unchanged."""
        start, moves, _ = self.scores()
        alpha = start.expand(emissions.shape[0], -1)  # before the first real token: the start scores only
        started = torch.zeros_like(mask[:, :1])
        alphas = []
        for t in range(emissions.shape[1]):
            stepped = torch.where(started, reduce(alpha.unsqueeze(2) + moves, dim=1), alpha) + emissions[:, t]
            real = mask[:, t : t + 1]
            alpha, started = torch.where(real, stepped, alpha), started | real
            alphas.append(alpha)
        return torch.stack(alphas, 1)

    def log_likelihood(self, emissions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log p(labels | emissions) of each sequence, (batch,), summed over the tags of the -100 positions."""
        gold = nn.functional.one_hot(labels.clamp(min=0), emissions.shape[-1]).bool()
        clamped = emissions.masked_fill((labels != IGNORE_INDEX).unsqueeze(-1) & ~gold, FORBIDDEN_MOVE)
        # The gold paths' score and the partition function in one pass, the two batches stacked.
        alphas = self.forward_scores(torch.cat([clamped, emissions]), torch.cat([mask, mask]), torch.logsumexp)
        gold_score, partition = torch.logsumexp(alphas[:, -1] + self.scores()[2], dim=-1).chunk(2)
        return gold_score - partition

    def max_marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, L): the score of the best whole path through each tag at each position. Its argmax is the
        Viterbi path at every position (the best path runs through its own tags), and its softmax says how far the
        best alternative falls behind: the pipeline reads Viterbi tags with a confidence."""
        _, moves, end = self.scores()
        best_before = self.forward_scores(emissions, mask, lambda scores, dim: scores.max(dim).values)
        after = end.expand(emissions.shape[0], -1)  # the best of what follows each tag (at the last token: the end)
        best_after = [after] * emissions.shape[1]
        for t in reversed(range(emissions.shape[1])):
            best_after[t] = after
            stepped = (moves + (emissions[:, t] + after).unsqueeze(1)).max(-1).values
            after = torch.where(mask[:, t : t + 1], stepped, after)
        return best_before + torch.stack(best_after, 1)


def word_start_index(
    input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, separator_id: int
) -> torch.Tensor:
    """(batch, seq_len): for every position, the position of the first character of its word. A word starts at a
    real token that follows a separator, padding or the start of the row (left or right padding alike)."""
    breaks = input_ids == separator_id  # (batch, seq_len)
    if attention_mask is not None:
        breaks = breaks | (attention_mask == 0)
    after_break = torch.cat([torch.ones_like(breaks[:, :1]), breaks[:, :-1]], 1)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(~breaks & after_break, positions, 0).cummax(1).values


class RNNLMForTokenClassification(RNNLMPreTrainedModel):
    """A tag per token (POS, NER) from the recurrent states; bidirectional encoders see both contexts. With
    `use_crf`, a CRF scores whole tag sequences, and in eval mode `logits` are its max-marginals (argmax: the Viterbi
    tags); in training mode they are the per-token emission scores the CRF reads."""

    def __init__(self, config: RNNLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RNNLMModel(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.layer_mix = RNNLMLayerMix(config) if config.layer_mix else None
        self.head_rnn = RNNLMHeadRNN(config) if config.head_rnn_size else None
        self.classifier = nn.Linear(config.head_feature_size, config.num_labels)
        self.crf = RNNLMCRF(config) if config.use_crf else None
        self.post_init()

    def word_features(self, features: torch.Tensor, input_ids, attention_mask) -> torch.Tensor:
        """Flair's word features at every position: the forward half there, the backward half at the word's first
        character (which has read the word and everything after it), (batch, seq_len, output_size)."""
        if input_ids is None:
            raise ValueError("`word_separator_id` finds words in `input_ids`: pass input_ids, not inputs_embeds.")
        forward_half, backward_half = features.chunk(2, dim=-1)
        starts = word_start_index(input_ids, attention_mask, self.config.word_separator_id)
        backward_half = backward_half.gather(1, starts.unsqueeze(-1).expand_as(backward_half))
        return torch.cat([forward_half, backward_half], -1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Tag ids in `[0, num_labels)`; `-100` (padding, unlabelled sub-words) is ignored (with `use_crf`: left
            to the CRF, which sums over its tags).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # Resolved here, not by the encoder: the layer mix asks it for the hidden states whatever the caller wants.
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        attention_mask = trim_mask(attention_mask, input_ids if input_ids is not None else inputs_embeds)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states or self.layer_mix is not None,
            return_dict=True,
        )
        features = self.layer_mix(outputs.hidden_states[1:]) if self.layer_mix else outputs.last_hidden_state
        if self.config.word_separator_id is not None:
            features = self.word_features(features, input_ids, attention_mask)
        if self.head_rnn is not None:
            features, _ = self.head_rnn(self.dropout(features), attention_mask, input_ids)
        logits = self.classifier(self.dropout(features))  # (batch, seq_len, num_labels)
        loss = None
        if labels is not None:
            check_labels(labels, logits.shape[:2], num_classes=self.num_labels)
        if self.crf is not None:
            logits = logits.float()  # the forward algorithm sums scores over the sentence: fp32 under bf16 autocast
            mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(logits[..., 0], dtype=bool)
            if labels is not None:  # the negative log-likelihood of the tag sequences, averaged over sequences
                loss = -self.crf.log_likelihood(logits, labels, mask).mean()
            if not self.training:  # decoding; a training step needs only the likelihood
                with torch.no_grad():
                    logits = self.crf.max_marginals(logits, mask)
        elif labels is not None:
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        hidden_states = outputs.hidden_states if output_hidden_states else None
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        return output if return_dict else output.to_tuple()


class RNNLMForSequenceClassification(RNNLMPreTrainedModel):
    """A label per sequence (sentiment) from a pooled summary of the recurrent states."""

    def __init__(self, config: RNNLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RNNLMModel(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.layer_mix = RNNLMLayerMix(config) if config.layer_mix else None
        self.head_rnn = RNNLMHeadRNN(config) if config.head_rnn_size else None
        self.score = nn.Linear(config.pooled_size, config.num_labels)
        self.post_init()

    def pool(
        self, outputs: RNNLMModelOutput, attention_mask: torch.Tensor | None, input_ids: torch.LongTensor | None = None
    ) -> torch.Tensor:
        """The `classifier_pooling` summary, (batch, pooled_size); padding never enters it."""
        pooling = self.config.classifier_pooling
        # ULMFiT's concat pooling (Howard & Ruder 2018, 3.3) reads [h_T, maxpool(H), meanpool(H)].
        names = ("last", "max", "mean") if pooling == "concat" else (pooling,)
        mix = self.layer_mix
        # (batch, seq_len, head_feature_size), zeros at padding
        hidden_states = mix(outputs.hidden_states[1:]) if mix else outputs.last_hidden_state
        if self.head_rnn is not None:
            hidden_states, head_last = self.head_rnn(self.dropout(hidden_states), attention_mask, input_ids)
        if names != ("last",):
            if attention_mask is None:
                attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
            mask = attention_mask[..., None].to(hidden_states.dtype)  # (batch, seq_len, 1)
        pooled = {}  # each (batch, head_feature_size)
        if "last" in names and self.head_rnn is not None:
            pooled["last"] = head_last  # the head RNN's own final states
        elif "last" in names:
            # The final h of each direction: forward after the last real token, backward after the first (as gpt2
            # pools the last non-pad token, but exact under any padding since the batch is packed).
            last = [state[:, : self.config.num_directions].flatten(1) for state in outputs.final_states]
            pooled["last"] = mix(last) if mix else last[-1]  # (batch, num_directions * hidden)
        if "max" in names:
            pooled["max"] = hidden_states.masked_fill(mask == 0, torch.finfo(hidden_states.dtype).min).amax(1)
        if "mean" in names:
            pooled["mean"] = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.cat([pooled[name] for name in names], -1)  # (batch, pooled_size)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        attention_mask (`torch.Tensor`, *optional*):
            Without it, positions holding `pad_token_id` count as padding (as gpt2's sequence head does).
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids (single-label), floats (regression, `num_labels == 1`) or multi-hot floats (multi-label);
            `config.problem_type` selects the loss as in transformers' own heads.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # Resolved here, not by the encoder: the layer mix asks it for the hidden states whatever the caller wants.
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        attention_mask = trim_mask(attention_mask, input_ids if input_ids is not None else inputs_embeds)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states or self.layer_mix is not None,
            output_final_states=True,
            return_dict=True,
        )
        logits = self.score(self.dropout(self.pool(outputs, attention_mask, input_ids)))  # (batch, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type in (None, "single_label_classification") and not labels.is_floating_point():
                check_labels(labels, logits.shape[:1], num_classes=self.num_labels if self.num_labels > 1 else None)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
            num_items = kwargs.get("num_items_in_batch")
            if num_items is not None and self.config.problem_type in ("regression", "multi_label_classification"):
                # These losses average per micro-batch and ignore num_items_in_batch: rescale so gradient
                # accumulation sums to the mean over the whole accumulated batch.
                loss = loss * labels.numel() / num_items
        hidden_states = outputs.hidden_states if output_hidden_states else None
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        return output if return_dict else output.to_tuple()


# The one table of heads: the Auto class that loads each model class. The package registers from it, and saved
# folders' `auto_map` (every Auto class loads them as Hub code) derives from it.
MODEL_CLASSES = {
    "AutoModel": RNNLMModel,
    "AutoModelForCausalLM": RNNLMForCausalLM,
    "AutoModelForTokenClassification": RNNLMForTokenClassification,
    "AutoModelForSequenceClassification": RNNLMForSequenceClassification,
}


def auto_map() -> dict[str, str]:
    """`config.json`'s `auto_map` for Hub code: every Auto class to its class in the shipped files."""
    models = {name: f"modeling_rnn_lm.{model_class.__name__}" for name, model_class in MODEL_CLASSES.items()}
    return {"AutoConfig": "configuration_rnn_lm.RNNLMConfig", **models}


__all__ = [
    "IGNORE_INDEX",
    "NotACausalLMError",
    "RNNLMCRF",
    "RNNLMLayerMix",
    "RNNLMHeadRNN",
    "RNNLMTokenSpelling",
    "MODEL_CLASSES",
    "RNNLMCache",
    "RNNLMPreTrainedModel",
    "RNNLMModel",
    "RNNLMForCausalLM",
    "RNNLMForTokenClassification",
    "RNNLMForSequenceClassification",
]
