"""Perplexity of a saved causal LM on a text file: static, with dynamic evaluation, and with a neural cache.

- Static: the stateful stream perplexity training reports (`RNNLMTrainer.evaluate`), with the text prepared exactly
  as the run prepared its own (`<eos>` per line or kept newlines, read from the folder's `run_info.json`).
- Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models", the RMS variant of their
  AWD-LSTM code): the evaluation stream is read in short segments, and after scoring each one the weights take a
  gradient step on it, normalised by the root-mean-square gradients measured on training text and decaying back
  toward the trained weights: `w += decay * r * (w0 - w) - lr * g / (rms + epsilon)`, `r = rms / mean(rms)`
  clipped at `1 / decay`. Works on a copy: the saved model never changes.
- Neural cache (Grave et al. 2017, "Improving Neural Language Models with a Continuous Cache"): the last layer's
  states of the previous `cache_size` positions, each keyed to the word that followed it, vote for the next word:
  `p = (1 - lambda) p_model + lambda softmax(theta * h_t . h_i)`, summed per word.

Both reuse one scoring pass per hyper-parameter setting, so a small grid search on a validation file is cheap.
"""

import copy
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .modeling_rnn_lm import CACHE_FIELD, IGNORE_INDEX


@dataclass
class TextOptions:
    """How a run turned text into its token stream; evaluation must do the same."""

    add_eos: bool = True
    keep_linebreaks: bool = False
    sample_by: str = "line"
    text_column: str = "text"

    @classmethod
    def of_run(cls, model_path: str | Path) -> "TextOptions":
        """Read from the folder's `run_info.json` (written by `train_clm.py`); the defaults otherwise."""
        arguments = run_arguments(model_path)
        return cls(**{key: arguments[key] for key in cls.__dataclass_fields__ if key in arguments})


def run_arguments(model_path: str | Path) -> dict:
    """The arguments a training script recorded in the folder's `run_info.json`; empty when there is none."""
    path = Path(model_path) / "run_info.json"
    return json.loads(path.read_text()).get("arguments", {}) if path.is_file() else {}


def load_stream(file: str, tokenizer, options: TextOptions) -> np.ndarray:
    """The file's token stream, prepared as training prepared its splits."""
    from .data import load_text_datasets, tokenize_to_stream

    split = load_text_datasets(
        train_file=file,
        validation_split_percentage=0,
        sample_by=options.sample_by,
        keep_linebreaks=options.keep_linebreaks,
        text_column=options.text_column,
    )["train"]
    return tokenize_to_stream(split, tokenizer, text_column=options.text_column, add_eos=options.add_eos)


def segments(tokens: np.ndarray, bptt: int, device: torch.device):
    """(inputs, targets) windows of one stream, each (1, <= bptt); every token but the first is a target once."""
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=device)
    for start in range(0, len(tokens) - 1, bptt):
        end = min(start + bptt, len(tokens) - 1)
        yield tokens[start:end].unsqueeze(0), tokens[start + 1 : end + 1].unsqueeze(0)


@torch.no_grad()
def score_stream(model, tokens: np.ndarray, bptt: int = 70) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stateful pass: each target's model log-probability (N,), the last layer's state that predicted it
    (N, output_size), and the targets (N,)."""
    model.eval()
    cache, log_probs, states, all_targets = None, [], [], []
    for inputs, targets in segments(tokens, bptt, model.device):
        out = model(inputs, cache=cache, use_cache=True, output_hidden_states=True)
        cache = getattr(out, CACHE_FIELD)
        log_probs.append(out.logits.float().log_softmax(-1)[0].gather(-1, targets[0, :, None])[:, 0])
        states.append(out.hidden_states[-1][0].float())
        all_targets.append(targets[0])
    return torch.cat(log_probs), torch.cat(states), torch.cat(all_targets)


def neural_cache_nll(
    log_probs: torch.Tensor,
    states: torch.Tensor,
    targets: torch.Tensor,
    cache_size: int = 500,
    theta: float = 1.0,
    lambdah: float = 0.1,
    chunk: int = 512,
) -> float:
    """Total NLL with Grave et al.'s cache over the previous `cache_size` positions (fewer at the stream start; the
    first token has none and keeps the model's probability)."""
    total = 0.0
    for start in range(0, len(targets), chunk):
        end = min(start + chunk, len(targets))
        first = max(0, start - cache_size)
        keys, key_words = states[first:end], targets[first:end]  # position i predicted key_words[i]
        scores = theta * states[start:end] @ keys.T  # (queries, keys)
        query_pos = torch.arange(start, end, device=states.device)[:, None]
        key_pos = torch.arange(first, end, device=states.device)[None, :]
        allowed = (key_pos < query_pos) & (key_pos >= query_pos - cache_size)
        attention = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)  # no keys: all zero
        p_cache = (attention * (key_words[None, :] == targets[start:end, None])).sum(-1)
        has_cache = allowed.any(-1)
        p_model = log_probs[start:end].exp()
        p = torch.where(has_cache, (1 - lambdah) * p_model + lambdah * p_cache, p_model)
        total -= float(p.clamp_min(1e-30).log().sum())
    return total


def gradient_statistics(model, tokens: np.ndarray, bptt: int = 5, batch_size: int = 100) -> list[torch.Tensor]:
    """Root-mean-square gradient of each parameter over training text (Krause et al.'s `gradstat`): the loss is the
    mean over a (batch_size x bptt) window of parallel streams, the state carried between windows, dropout off."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    squares = [torch.zeros_like(p) for p in params]
    width = (len(tokens) - 1) // batch_size
    if width < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for gradient statistics over {batch_size} streams.")
    columns = torch.as_tensor(tokens[: width * batch_size + 1], device=model.device)
    inputs_all, targets_all = columns[:-1].view(batch_size, width), columns[1:].view(batch_size, width)
    cache, count = None, 0
    for start in range(0, width, bptt):
        inputs, targets = inputs_all[:, start : start + bptt], targets_all[:, start : start + bptt]
        model.zero_grad()
        out = model(inputs, cache=cache, use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), targets.flatten()).backward()
        for square, param in zip(squares, params):
            square.add_(param.grad.pow(2))
        count += 1
    model.zero_grad()
    return [(square / count).sqrt() for square in squares]


def dynamic_eval_nll(
    model,
    tokens: np.ndarray,
    rms: list[torch.Tensor],
    lr: float = 2e-3,
    decay: float = 0.02,
    epsilon: float = 1e-3,
    bptt: int = 5,
) -> float:
    """Total NLL of the stream under dynamic evaluation; `model` is copied, never changed."""
    model = copy.deepcopy(model).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    mean_rms = sum(float(r.mean()) for r in rms) / len(rms)
    # Per-weight coefficients, computed once: decay * rate (the rate clipped so a decay step never overshoots the
    # trained weight) and lr / (rms + epsilon).
    pull = [decay * (r / mean_rms).clamp(max=1 / decay) if decay > 0 else torch.zeros_like(r) for r in rms]
    step = [lr / (r + epsilon) for r in rms]
    total, cache = 0.0, None
    for inputs, targets in segments(tokens, bptt, model.device):
        model.zero_grad(set_to_none=False)
        out = model(inputs, cache=cache, use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        loss = torch.nn.functional.cross_entropy(out.logits[0], targets[0])  # scored before the update
        total += float(loss.detach()) * targets.shape[1]
        loss.backward()
        with torch.no_grad():
            for param, start, c, s in zip(params, trained, pull, step):
                # param += c * (start - param) - s * grad, in place (a step per few tokens: memory traffic is the cost)
                pull_back = start.sub(param).mul_(c)
                param.add_(pull_back).sub_(param.grad.mul_(s))
    return total


@torch.no_grad()
def fresh_start_perplexities(
    model, tokens: np.ndarray, eos_token_id: int, first: int = 5, max_documents: int = 2000, batch_size: int = 128
) -> dict[str, float]:
    """How well the model starts a text from a fresh (zero) state, as generation from a prompt does.

    Documents are the stretches between `<eos>` tokens. For each, the predictions of its tokens 2..first+1 are scored
    twice: from a zero state that has read only the document's own first tokens (`fresh_start_perplexity`), and in
    the stream, with the whole preceding text as context (`carried_start_perplexity`).
    """
    model.eval()
    log_probs, _, _ = score_stream(model, tokens)  # log_probs[i] scores tokens[i + 1]
    starts = [0] + [i + 1 for i in np.flatnonzero(tokens[:-1] == eos_token_id)]
    starts = [s for s in starts if s + 1 < len(tokens)][:max_documents]
    carried, fresh, count = 0.0, 0.0, 0
    for batch_start in range(0, len(starts), batch_size):
        rows = [tokens[s : s + first + 1] for s in starts[batch_start : batch_start + batch_size]]
        rows = [row[: np.argmax(row == eos_token_id) + 1] if (row == eos_token_id).any() else row for row in rows]
        width = max(len(row) for row in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long, device=model.device)
        mask = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)], mask[i, : len(row)] = torch.as_tensor(row), 1
        logits = model(input_ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
        fresh += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        for i, row in enumerate(rows):
            start = starts[batch_start + i]
            carried -= float(log_probs[start : start + len(row) - 1].sum())
            count += len(row) - 1
    return {
        "fresh_start_perplexity": math.exp(fresh / max(count, 1)),
        "carried_start_perplexity": math.exp(carried / max(count, 1)),
        "start_tokens": count,
    }


DYNAMIC_GRID = {"lr": (5e-4, 1e-3, 2e-3, 4e-3), "decay": (0.002, 0.02)}
CACHE_GRID = {"theta": (0.3, 0.6, 1.0), "lambdah": (0.05, 0.1, 0.15, 0.2)}


def grid_search(score, grid: dict[str, tuple]) -> tuple[dict, list[dict]]:
    """The setting of `grid` with the lowest `score(**setting)`, and every trial."""
    trials = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for trial in trials:
        trial["nll"] = score(**trial)
    best = min(trials, key=lambda trial: trial["nll"])
    return {key: best[key] for key in grid}, trials


def adaptive_perplexities(
    model,
    tokens: np.ndarray,
    dynamic_eval: dict | None = None,
    neural_cache: dict | None = None,
    rms: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """`dynamic_eval_perplexity` and/or `neural_cache_perplexity` of one stream, with the given settings."""
    num_targets = len(tokens) - 1
    metrics = {}
    if neural_cache is not None:
        log_probs, states, targets = score_stream(model, tokens)
        nll = neural_cache_nll(log_probs, states, targets, **neural_cache)
        metrics["neural_cache_perplexity"] = math.exp(nll / num_targets)
    if dynamic_eval is not None:
        nll = dynamic_eval_nll(model, tokens, rms, **dynamic_eval)
        metrics["dynamic_eval_perplexity"] = math.exp(nll / num_targets)
    return metrics


@torch.no_grad()
def continuation_log_probs(
    model,
    tokenizer,
    items: list[tuple[str, str]],
    batch_size: int = 64,
    prepend_eos: bool = True,
) -> list[float]:
    """The summed log-probability of each `continuation` after its `context`, for `items` of (context, continuation).

    The continuation is tokenized in context (`f"{context} {continuation}"`, so a BPE word gets its leading-space
    token) and may span several tokens; an empty context scores the whole continuation as a sentence. With
    `prepend_eos`, the context follows `<eos>`, as every line does in a stream built with `add_eos=True` (a model with
    `start_after_eos` reads that `<eos>` itself); without it, an empty context leaves the first token unscored. `model` is any causal LM called as
    `model(input_ids=..., attention_mask=...)` returning `.logits` (batch, seq_len, vocab_size); batches are
    left-padded, which the package's models read as unpadded rows.
    """
    if getattr(getattr(model, "config", None), "start_after_eos", False):
        prepend_eos = False  # the model reads an <eos> before a fresh state itself
    start = [tokenizer.eos_token_id] if prepend_eos else []
    candidates = []  # (context ids, continuation ids)
    for context, continuation in items:
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        ids = _continuation_ids(tokenizer, context, context_ids, continuation)
        if not start and not context_ids:  # the first token has no prediction: it becomes the context
            context_ids, ids = ids[:1], ids[1:]
        candidates.append((start + context_ids, ids))
    was_training = model.training
    model.eval()
    scores = []
    for i in range(0, len(candidates), batch_size):
        scores += _batch_continuation_log_probs(model, candidates[i : i + batch_size], tokenizer.pad_token_id)
    model.train(was_training)
    return scores


def _continuation_ids(tokenizer, context: str, context_ids: list[int], continuation: str) -> list[int]:
    full_ids = tokenizer(f"{context} {continuation}" if context else continuation, add_special_tokens=False)
    full_ids = full_ids["input_ids"]
    if full_ids[: len(context_ids)] != context_ids or len(full_ids) == len(context_ids):
        raise ValueError(
            f"Tokenizing {context!r} + {continuation!r} changes the context tokens; cannot score the continuation alone."
        )
    return full_ids[len(context_ids) :]


def _batch_continuation_log_probs(model, candidates: list[tuple[list[int], list[int]]], pad_token_id: int) -> list:
    device = next(model.parameters()).device
    length = max(len(context) + len(continuation) for context, continuation in candidates)
    input_ids = torch.full((len(candidates), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    is_continuation = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (context, continuation) in enumerate(candidates):
        sequence = context + continuation
        input_ids[row, length - len(sequence) :] = torch.tensor(sequence)  # left padding
        attention_mask[row, length - len(sequence) :] = 1
        is_continuation[row, length - len(continuation) :] = True
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()  # (batch, seq_len, vocab_size)
    # Position t predicts token t + 1.
    next_token_log_probs = log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (batch, seq_len - 1)
    return (next_token_log_probs * is_continuation[:, 1:]).sum(-1).tolist()
