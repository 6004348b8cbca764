"""Perplexity of a saved causal LM on a text file: static, with dynamic evaluation, and with a neural cache.

- Static: the stateful stream perplexity of one stream, the number a run reports at its end (`one_stream_metrics`;
  `RNNLMTrainer.evaluate` with one stream gives the same), with the text prepared exactly as the run prepared its own
  (`<eos>` per line or kept newlines, read from the folder's `run_info.json`).
- Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models", the RMS variant of their
  AWD-LSTM code): the evaluation stream is read in short segments, and after scoring each one the weights take a
  gradient step on it, normalised by the root-mean-square gradients measured on training text and decaying back
  toward the trained weights: `w += decay * r * (w0 - w) - lr * g / (rms + epsilon)`, `r = rms / mean(rms)`
  clipped at `1 / decay`. Works on a copy: the saved model never changes.
- Neural cache (Grave et al. 2017, "Improving Neural Language Models with a Continuous Cache"): the last layer's
  states of the previous `cache_size` positions, each keyed to the word that followed it, vote for the next word:
  `p = (1 - lambda) p_model + lambda softmax(theta * h_t . h_i)`, summed per word.

Their settings must be tuned on held-out text: the right dynamic-evaluation step size differs by orders of magnitude
between models (2e-3 for an AWD-LSTM on PTB, 3e-5 for a small word-level LM, where 2e-3 makes perplexity worse than
the static model's). `tune_neural_cache` (a grid, one scoring pass for all of it) and `tune_dynamic_eval` (a
coarse-to-fine search over 1e-5 .. 1e-2) both count "off", the static model, as a candidate, so a tuned method never
does worse than static on the tuning text.
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


def load_stream(file: str, tokenizer, options: TextOptions, option: str = "--file") -> np.ndarray:
    """The file's token stream, prepared as training prepared its splits. A bad file (missing, empty, not UTF-8, no
    text column) raises a `DataError` naming `option`, the command-line option that gave the file."""
    from .data import DataError, load_text_datasets, tokenize_to_stream

    try:
        split = load_text_datasets(
            train_file=file,
            validation_split_percentage=0,
            sample_by=options.sample_by,
            keep_linebreaks=options.keep_linebreaks,
            text_column=options.text_column,
        )["train"]
    except DataError as error:  # the loader names its own argument, train_file: name the option the user passed
        message = str(error)
        message = option + message.removeprefix("train_file") if message.startswith("train_file") else message
        raise DataError(message) from None
    return tokenize_to_stream(split, tokenizer, text_column=options.text_column, add_eos=options.add_eos)


def run_validation_stream(model_path: str | Path, tokenizer, options: TextOptions) -> tuple[str, np.ndarray] | None:
    """The run's own validation text as a token stream, with a description, from the folder's `run_info.json`: its
    `validation_file`, or else the share of `train_file` the run held out (`validation_split_percentage`, `seed`: the
    same lines). None when the folder names neither, or the file is not found from here."""
    from .data import load_text_datasets, tokenize_to_stream

    arguments = run_arguments(model_path)
    validation_file, train_file = arguments.get("validation_file"), arguments.get("train_file")
    if validation_file:
        if not Path(validation_file).is_file():
            return None
        return f"the run's validation_file {validation_file}", load_stream(
            validation_file, tokenizer, options, option="the run's validation_file (run_info.json)"
        )
    percentage = arguments.get("validation_split_percentage") or 0
    if not train_file or not Path(train_file).is_file() or percentage <= 0:
        return None
    split = load_text_datasets(
        train_file=train_file,
        validation_split_percentage=percentage,
        seed=arguments.get("seed", 42),
        sample_by=options.sample_by,
        keep_linebreaks=options.keep_linebreaks,
        text_column=options.text_column,
    )["validation"]
    tokens = tokenize_to_stream(split, tokenizer, text_column=options.text_column, add_eos=options.add_eos)
    return f"the {percentage}% of {train_file} the run held out for validation", tokens


# Files from which a tokenizer can be loaded without converting a slow one (which needs sentencepiece or tiktoken).
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


@torch.no_grad()
def one_stream_metrics(
    model, tokens: np.ndarray, bptt: int, metric_key_prefix: str = "eval", pad_token_id: int = 0, name: str = "split"
) -> dict[str, float]:
    """`{prefix}_loss`, `{prefix}_perplexity`, `{prefix}_tokens` of ONE stream carried over the whole of `tokens`: the
    published protocol, and what `rnn-lm evaluate` reports with its defaults. The segments, the model calls and the
    sums are those of `RNNLMTrainer.evaluate` on `eval_stream_segments(tokens, bptt)` with batch size 1 on one
    process, so both give the same number. In a distributed run every process scores the whole stream itself (no
    gather): the number is the same on all of them and needs no collective."""
    from .data import eval_stream_segments

    dataset = eval_stream_segments(tokens, bptt, 1, 1, pad_token_id, name=name)
    was_training = model.training
    model.eval()
    cache, nll_sums, count = None, [], 0
    for index in range(len(dataset)):
        example = {key: value[None].to(model.device) for key, value in dataset[index].items()}
        out = model(
            input_ids=example["input_ids"], attention_mask=example["attention_mask"], cache=cache, use_cache=True
        )
        cache = getattr(out, CACHE_FIELD)
        targets = example["shift_labels"]
        nll = torch.nn.functional.cross_entropy(
            out.logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        nll_sums.append(float(nll))
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    loss = math.fsum(nll_sums) / count  # as the package's perplexity metric sums
    return {
        f"{metric_key_prefix}_loss": loss,
        f"{metric_key_prefix}_perplexity": math.exp(loss),
        f"{metric_key_prefix}_tokens": count,
    }


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
    stop_above: float = math.inf,
) -> float:
    """Total NLL of the stream under dynamic evaluation; `model` is copied, never changed. Returns `math.inf` as soon
    as the running total passes `stop_above` (a search's best so far: this setting cannot win) or is not finite (the
    updates diverged)."""
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
        if not total <= stop_above:  # also true for NaN
            return math.inf
        loss.backward()
        with torch.no_grad():
            for param, start, c, s in zip(params, trained, pull, step):
                # param += c * (start - param) - s * grad, in place (a step per few tokens: memory traffic is the cost)
                if decay > 0:  # without decay there is no pull: a third less of the update's memory traffic
                    param.add_(start.sub(param).mul_(c))
                param.sub_(param.grad.mul_(s))
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


# Dynamic evaluation's step size depends on the model (PTB's AWD-LSTM takes 2e-3, a small word-level LM 3e-5, a
# barely trained character LM 6e-3 and nothing below 4e-3), so the search spans the scales: half decades at a middle
# decay, then quarter decades around the best, then the decay at the best step.
DYNAMIC_LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DYNAMIC_DECAY = 0.002
DYNAMIC_FINE_DECAYS = (0.0, 0.002, 0.02, 0.1)
# What a setting the user fixed only in part is completed with when there is no text to tune the rest on.
DYNAMIC_DEFAULTS = {"lr": 2e-3, "decay": 0.02}
CACHE_GRID = {"theta": (0.1, 0.3, 0.6, 1.0, 2.0), "lambdah": (0.05, 0.1, 0.15, 0.2, 0.3)}
CACHE_DEFAULTS = {"theta": 1.0, "lambdah": 0.1}
OFF = "off"  # the tuned setting when no setting beats the static model on the tuning text


def perplexity_of(nll: float, num_targets: int) -> float:
    """exp(nll / num_targets), `math.inf` where that overflows."""
    return math.exp(nll / num_targets) if nll / num_targets < 700 else math.inf


def grid_search(score, grid: dict[str, tuple]) -> tuple[dict, list[dict]]:
    """The setting of `grid` with the lowest `score(**setting)`, and every trial."""
    trials = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for trial in trials:
        trial["nll"] = score(**trial)
    best = min(trials, key=lambda trial: trial["nll"])
    return {key: best[key] for key in grid}, trials


def tune_neural_cache(
    log_probs: torch.Tensor,
    states: torch.Tensor,
    targets: torch.Tensor,
    cache_size: int = 500,
    fixed: dict | None = None,
) -> tuple[dict | str, list[dict]]:
    """The cache's `theta` and `lambdah` with the lowest NLL on a scored tuning stream (`score_stream`), over
    `CACHE_GRID` and "off" (lambda 0: the static model), and every trial with its perplexity. Settings in `fixed` are
    kept; "off" is a candidate only when `lambdah` is not fixed. Returns `OFF` when nothing beats the static model."""
    fixed = fixed or {}
    num_targets = len(targets)
    static_nll = -float(log_probs.sum())
    trials = [] if "lambdah" in fixed else [{"setting": OFF, "perplexity": perplexity_of(static_nll, num_targets)}]
    best, best_nll = (OFF, static_nll) if trials else (None, math.inf)
    grid = {key: (fixed[key],) if key in fixed else values for key, values in CACHE_GRID.items()}
    for theta, lambdah in itertools.product(grid["theta"], grid["lambdah"]):
        nll = neural_cache_nll(log_probs, states, targets, cache_size, theta=theta, lambdah=lambdah)
        trials.append({"theta": theta, "lambdah": lambdah, "perplexity": perplexity_of(nll, num_targets)})
        if nll < best_nll:
            best, best_nll = {"theta": theta, "lambdah": lambdah}, nll
    return best, trials


def tune_dynamic_eval(
    model,
    tokens: np.ndarray,
    rms: list[torch.Tensor],
    static_nll: float,
    fixed: dict | None = None,
    bptt: int = 5,
) -> tuple[dict | str, list[dict]]:
    """Dynamic evaluation's `lr` and `decay` with the lowest NLL on `tokens`, by a coarse-to-fine search, and every
    trial (12 at most, each a pass of `dynamic_eval_nll`; one that falls behind the best so far is stopped early).

    1. `lr` in `DYNAMIC_LRS` (1e-5 .. 1e-2, half a decade apart) at `decay` `DYNAMIC_DECAY`;
    2. `lr` a quarter decade either side of the best (x 10 ** +-0.25);
    3. `decay` in `DYNAMIC_FINE_DECAYS` (0 .. 0.1) at the best `lr`.
    Settings in `fixed` are kept (their stages skipped). "Off" (no adaptation: `static_nll`, the model's own NLL of
    `tokens`) is a candidate unless `lr` is fixed; `OFF` is returned when no step size beats it.
    """
    fixed = fixed or {}
    num_targets = len(tokens) - 1
    trials = [] if "lr" in fixed else [{"setting": OFF, "perplexity": perplexity_of(static_nll, num_targets)}]
    best, best_nll = (OFF, static_nll) if trials else (None, math.inf)
    tried = set()

    def trial(lr: float, decay: float) -> None:
        nonlocal best, best_nll
        lr = float(f"{lr:.3g}")
        if (lr, decay) in tried:
            return
        tried.add((lr, decay))
        nll = dynamic_eval_nll(model, tokens, rms, lr=lr, decay=decay, bptt=bptt, stop_above=best_nll)
        stopped = math.isinf(nll)
        trials.append({"lr": lr, "decay": decay, "perplexity": None if stopped else perplexity_of(nll, num_targets)})
        if stopped:
            trials[-1]["stopped"] = "behind the best so far (or diverged)"
        if nll < best_nll:
            best, best_nll = {"lr": lr, "decay": decay}, nll

    decay = fixed.get("decay", DYNAMIC_DECAY)
    for lr in (fixed["lr"],) if "lr" in fixed else DYNAMIC_LRS:
        trial(lr, decay)
    if best not in (OFF, None) and "lr" not in fixed:
        center = best["lr"]
        for factor in (10**-0.25, 10**0.25):
            trial(center * factor, decay)
    if best not in (OFF, None) and "decay" not in fixed:
        for decay in DYNAMIC_FINE_DECAYS:
            trial(best["lr"], decay)
    if best is None:  # every trial of a fixed lr diverged: report the fixed setting anyway
        best = {"lr": fixed["lr"], "decay": decay}
    return best, trials


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
        metrics["neural_cache_perplexity"] = perplexity_of(nll, num_targets)
    if dynamic_eval is not None:
        nll = dynamic_eval_nll(model, tokens, rms, **dynamic_eval)
        metrics["dynamic_eval_perplexity"] = perplexity_of(nll, num_targets)
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
