"""Speed of `RNNLMForCausalLM` next to bare PyTorch LSTM language models, measured side by side in one run.

Two measurements, each a set of variants run in interleaved repeats (A, B, C, A, B, C, ... with the order rotated
every repeat) so that machine noise hits all variants alike; every figure is reported as median [min, max].

1. Training throughput (tokens/s of forward + cross-entropy + backward + clip + SGD step) of our model against
   `nn.Embedding -> nn.LSTM(num_layers=L) -> nn.Linear` (pytorch/examples word_language_model, one fused call) and
   against the same bare LM built from L single-layer `nn.LSTM`s (our per-layer design without the HF wrapper).
   All models hold the same weights (copied from ours), so they do the same arithmetic.
2. Decode latency per generated token at batch 1 (greedy `generate`, prefill excluded) for a short and a long
   prompt, against a loop over our model's `forward` and a bare embedding -> LSTM step -> linear -> argmax loop.

Usage:
    python bench/speed.py --device cpu --sizes full --threads 2 --out bench/results/speed_cpu.json
    python bench/speed.py --device cuda --sizes full --bf16 --out bench/results/speed_cuda.json
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path


# Benchmark this checkout's package even where it is not pip-installed (a bare GPU machine).
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM  # noqa: E402
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD  # noqa: E402


# `full` is the PTB "medium" model of Zaremba et al. 2014 / word_language_model (2x650, vocab 10k, batch 20, bptt 35)
# and the prompt lengths of the decode requirement (64 vs 4,096). `small` is a quick check, `tiny` the smoke test.
PRESETS = {
    "tiny": {
        "num_layers": 2,
        "hidden_size": 32,
        "vocab_size": 100,
        "batch_size": 4,
        "bptt": 8,
        "train_steps": 2,
        "prompt_lengths": [8, 64],
        "new_tokens": 8,
        "repeats": 2,
    },
    "small": {
        "num_layers": 2,
        "hidden_size": 200,
        "vocab_size": 10000,
        "batch_size": 20,
        "bptt": 20,
        "train_steps": 3,
        "prompt_lengths": [64, 1024],
        "new_tokens": 32,
        "repeats": 3,
    },
    "full": {
        "num_layers": 2,
        "hidden_size": 650,
        "vocab_size": 10000,
        "batch_size": 20,
        "bptt": 35,
        "train_steps": 5,
        "prompt_lengths": [64, 4096],
        "new_tokens": 128,
        "repeats": 7,
    },
}
# Requirement of issue 2: our throughput within 5% of the bare LM; decode flat in the context and near a bare loop.
TRAIN_TARGET = 0.95  # tokens/s ours / bare, at least
FLATNESS_TARGET = 1.1  # ms/token at the longest prompt / at the shortest, at most
DECODE_TARGET = 1.3  # ms/token generate / bare loop, at most
# ours_weight_drop: AWD-LSTM's DropConnect on W_hh, new dropped matrices swapped in per call (functional_call); on
# CUDA, cuDNN then re-packs its weights every forward: this variant measures that cost against the bare LSTM.
TRAIN_VARIANTS = ("bare_fused", "bare_per_layer", "ours", "bare_fused_stateful", "ours_stateful", "ours_weight_drop")
DECODE_VARIANTS = ("generate", "forward_loop", "bare_loop")


# ----- models -----
class BareLSTMLM(nn.Module):
    """pytorch/examples word_language_model: embedding -> LSTM -> linear, dropout on every non-recurrent connection.

    `fused=True` runs all layers as one multi-layer `nn.LSTM` (one cuDNN call); `fused=False` stacks single-layer
    `nn.LSTM`s, which is our model's per-layer design without the transformers wrapper.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, dropout: float, tie: bool, fused: bool):
        super().__init__()
        self.fused = fused
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, hidden_size)
        if fused:
            self.rnn = nn.LSTM(hidden_size, hidden_size, num_layers, dropout=dropout, batch_first=True)
        else:
            self.rnns = nn.ModuleList(nn.LSTM(hidden_size, hidden_size, batch_first=True) for _ in range(num_layers))
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie:
            self.decoder.weight = self.encoder.weight  # Press & Wolf 2017

    def run_rnn(self, x: torch.Tensor, hidden=None):
        # x: (batch, seq_len, hidden); hidden: (h, c) each (num_layers, batch, hidden), or one (h, c) per layer
        if self.fused:
            return self.rnn(x, hidden)
        new_hidden = []
        for i, rnn in enumerate(self.rnns):
            x, layer_hidden = rnn(x, None if hidden is None else hidden[i])
            new_hidden.append(layer_hidden)
            if i < len(self.rnns) - 1:
                x = self.drop(x)  # between layers, as nn.LSTM(dropout=...) does
        return x, new_hidden

    def forward(self, input_ids: torch.LongTensor, hidden=None):
        x, hidden = self.run_rnn(self.drop(self.encoder(input_ids)), hidden)  # (batch, seq_len, hidden)
        return self.decoder(self.drop(x)), hidden  # (batch, seq_len, vocab)


def detach(hidden):
    """word_language_model's `repackage_hidden`: cut the graph, keep the values (truncated BPTT)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return type(hidden)(detach(h) for h in hidden)


def copy_weights(ours: RNNLMForCausalLM, bare: BareLSTMLM) -> None:
    """Give the bare LM our weights, so both do the same arithmetic (and the checks can compare outputs)."""
    with torch.no_grad():
        bare.encoder.weight.copy_(ours.model.embeddings.weight)
        bare.decoder.weight.copy_(ours.lm_head.weight)
        bare.decoder.bias.copy_(ours.lm_head.bias)
        for i, layer in enumerate(ours.model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                target = getattr(bare.rnn, f"{name}_l{i}") if bare.fused else getattr(bare.rnns[i], f"{name}_l0")
                target.copy_(getattr(layer.rnn, f"{name}_l0"))


def build_models(settings: dict, device: torch.device) -> dict[str, nn.Module]:
    config = RNNLMConfig(
        vocab_size=settings["vocab_size"],
        hidden_size=settings["hidden_size"],
        num_hidden_layers=settings["num_layers"],
        cell_type="lstm",
        dropout=settings["dropout"],
        tie_word_embeddings=settings["tie"],
    )
    models = {"ours": RNNLMForCausalLM(config)}
    models["ours_weight_drop"] = RNNLMForCausalLM(RNNLMConfig.from_dict({**config.to_dict(), "weight_drop": 0.5}))
    models["ours_weight_drop"].load_state_dict(models["ours"].state_dict())
    for name, fused in (("bare_fused", True), ("bare_per_layer", False)):
        bare = BareLSTMLM(
            settings["vocab_size"],
            settings["hidden_size"],
            settings["num_layers"],
            settings["dropout"],
            settings["tie"],
            fused,
        )
        copy_weights(models["ours"], bare)
        models[name] = bare
    return {name: model.to(device) for name, model in models.items()}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # .parameters() counts a tied matrix once


# ----- timing helpers -----
def make_sync(device: torch.device) -> Callable[[], None]:
    # CUDA runs asynchronously: a timer must wait for the queued kernels to finish.
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def compare(numerator: list[float], denominator: list[float]) -> dict:
    """Ratio of two variants measured back to back in each repeat: the median of the per-repeat ratios (robust to
    drift over the run), their min and max, and the ratio of the two medians."""
    paired = [a / b for a, b in zip(numerator, denominator)]
    return {
        "median": statistics.median(paired),
        "min": min(paired),
        "max": max(paired),
        "ratio_of_medians": statistics.median(numerator) / statistics.median(denominator),
    }


def rotated(names: tuple[str, ...], repeat: int) -> list[str]:
    # Each variant takes every slot in turn, so none always runs first (cold) or right after a given other.
    shift = repeat % len(names)
    return list(names[shift:] + names[:shift])


# ----- 1. training throughput -----
def make_train_steps(models: dict, settings: dict, device: torch.device, amp_dtype: torch.dtype | None) -> dict:
    """One closure per variant that runs a training step on batch `i`: forward, mean cross-entropy, backward,
    gradient clipping and a plain SGD step. `*_stateful` variants carry the detached state into the next batch."""
    generator = torch.Generator().manual_seed(settings["seed"])
    shape = (settings["batch_size"], settings["bptt"])
    batches = [
        (
            torch.randint(3, settings["vocab_size"], shape, generator=generator).to(device),  # (batch, bptt)
            torch.randint(3, settings["vocab_size"], shape, generator=generator).to(device),  # next tokens
        )
        for _ in range(4)
    ]
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=settings["lr"]) for name, model in models.items()}

    def update(name: str, loss: torch.Tensor) -> None:
        loss.backward()
        nn.utils.clip_grad_norm_(models[name].parameters(), settings["clip"])
        optimizers[name].step()

    def bare_step(name: str, stateful: bool):
        carried = {"hidden": None}

        def step(i: int) -> None:
            input_ids, targets = batches[i % len(batches)]
            optimizers[name].zero_grad(set_to_none=True)
            with autocast():
                logits, hidden = models[name](input_ids, carried["hidden"])
                loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
            update(name, loss)
            carried["hidden"] = detach(hidden) if stateful else None

        return step

    def ours_step(stateful: bool, name: str = "ours"):
        carried = {"cache": None}

        def step(i: int) -> None:
            input_ids, targets = batches[i % len(batches)]
            optimizers[name].zero_grad(set_to_none=True)
            with autocast():
                # shift_labels: the targets are already the next tokens, exactly the bare LM's targets.
                out = models[name](
                    input_ids=input_ids, shift_labels=targets, cache=carried["cache"], use_cache=stateful
                )
            update(name, out.loss)
            carried["cache"] = getattr(out, CACHE_FIELD) if stateful else None  # the model stores detached states

        return step

    return {
        "bare_fused": bare_step("bare_fused", stateful=False),
        "bare_per_layer": bare_step("bare_per_layer", stateful=False),
        "ours": ours_step(stateful=False),
        "bare_fused_stateful": bare_step("bare_fused", stateful=True),
        "ours_stateful": ours_step(stateful=True),
        "ours_weight_drop": ours_step(stateful=False, name="ours_weight_drop"),
    }


def check_same_loss(models: dict, settings: dict, device: torch.device) -> float:
    """Largest |loss difference| between ours and the bare LMs on one batch, dropout off: proves equal arithmetic."""
    input_ids = torch.randint(3, settings["vocab_size"], (settings["batch_size"], settings["bptt"]), device=device)
    targets = input_ids.roll(-1, dims=1)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        ours = models["ours"](input_ids=input_ids, shift_labels=targets).loss
        bare = [
            nn.functional.cross_entropy(models[name](input_ids)[0].flatten(0, 1), targets.view(-1))
            for name in ("bare_fused", "bare_per_layer")
        ]
    for model in models.values():
        model.train()
    return max(abs(float(ours - loss)) for loss in bare)


def bench_train(models: dict, settings: dict, device: torch.device, amp_dtype: torch.dtype | None = None) -> dict:
    sync = make_sync(device)
    steps = make_train_steps(models, settings, device, amp_dtype)
    counter = dict.fromkeys(steps, 0)  # batch index per variant, so stateful variants walk consecutive batches

    def run(name: str, num_steps: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(num_steps):
            steps[name](counter[name])
            counter[name] += 1
        sync()
        return time.perf_counter() - start

    for name in TRAIN_VARIANTS:
        run(name, settings["warmup"])
    tokens = settings["train_steps"] * settings["batch_size"] * settings["bptt"]
    throughput = {name: [] for name in TRAIN_VARIANTS}
    for repeat in range(settings["repeats"]):
        for name in rotated(TRAIN_VARIANTS, repeat):
            throughput[name].append(tokens / run(name, settings["train_steps"]))
    return {
        "tokens_per_s": {name: summarize(values) for name, values in throughput.items()},
        # Throughput ratios: above 1 means the numerator is faster.
        "ratios": {
            "ours/bare_fused": compare(throughput["ours"], throughput["bare_fused"]),
            "ours_stateful/bare_fused_stateful": compare(
                throughput["ours_stateful"], throughput["bare_fused_stateful"]
            ),
            "bare_per_layer/bare_fused": compare(throughput["bare_per_layer"], throughput["bare_fused"]),
            "ours/bare_per_layer": compare(throughput["ours"], throughput["bare_per_layer"]),
            "ours_stateful/ours": compare(throughput["ours_stateful"], throughput["ours"]),
            "ours_weight_drop/bare_fused": compare(throughput["ours_weight_drop"], throughput["bare_fused"]),
            "ours_weight_drop/ours": compare(throughput["ours_weight_drop"], throughput["ours"]),
        },
    }


# ----- 2. decode latency -----
class FirstTokenClock(StoppingCriteria):
    """Notes when generate() has its first new token (prefill done); never stops generation. Synchronizes once, so
    the decode loop after it keeps its normal (possibly asynchronous) pace."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.first_token_time: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.first_token_time is None:
            self.sync()
            self.first_token_time = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def greedy(logits: torch.Tensor, eos_token_id: int) -> torch.LongTensor:
    # min_new_tokens=N in generate() bans EOS at every step; the loops do the same so all variants pick alike.
    logits[:, eos_token_id] = float("-inf")
    return logits.argmax(dim=-1, keepdim=True)  # (batch, 1)


def decode_generate(models: dict, prompt: torch.LongTensor, new_tokens: int, sync) -> tuple[float, float, list]:
    clock = FirstTokenClock(sync)
    sync()
    start = time.perf_counter()
    output = models["ours"].generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        stopping_criteria=StoppingCriteriaList([clock]),
    )
    sync()
    end = time.perf_counter()
    return clock.first_token_time - start, end - clock.first_token_time, output[0, prompt.shape[1] :].tolist()


def decode_forward_loop(models: dict, prompt: torch.LongTensor, new_tokens: int, sync) -> tuple[float, float, list]:
    """Our model's forward with its cache, step by step: generate() minus its own bookkeeping."""
    model, eos = models["ours"], models["ours"].config.eos_token_id
    sync()
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    token = greedy(out.logits[:, -1], eos)
    sync()
    first = time.perf_counter()
    tokens = [token]
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, cache=getattr(out, CACHE_FIELD), use_cache=True)
        token = greedy(out.logits[:, -1], eos)
        tokens.append(token)
    sync()
    end = time.perf_counter()
    return first - start, end - first, torch.cat(tokens, dim=1)[0].tolist()


def decode_bare_loop(models: dict, prompt: torch.LongTensor, new_tokens: int, sync) -> tuple[float, float, list]:
    """The bare fused LM (same weights): embedding -> LSTM step with carried (h, c) -> linear -> argmax. No per-step
    host synchronization, so on CUDA this is the fastest loop PyTorch allows (word_language_model's sampler is
    slower: it reads every token back to print it)."""
    bare, eos = models["bare_fused"], models["ours"].config.eos_token_id
    sync()
    start = time.perf_counter()
    x, hidden = bare.rnn(bare.encoder(prompt))  # (1, prompt_len, hidden)
    token = greedy(bare.decoder(x[:, -1]), eos)
    sync()
    first = time.perf_counter()
    tokens = [token]
    for _ in range(new_tokens - 1):
        x, hidden = bare.rnn(bare.encoder(token), hidden)  # (1, 1, hidden)
        token = greedy(bare.decoder(x[:, -1]), eos)
        tokens.append(token)
    sync()
    end = time.perf_counter()
    return first - start, end - first, torch.cat(tokens, dim=1)[0].tolist()


DECODERS = {"generate": decode_generate, "forward_loop": decode_forward_loop, "bare_loop": decode_bare_loop}


def bench_decode(models: dict, settings: dict, device: torch.device) -> dict:
    """ms per generated token after the prefill = (time of the last token - time of the first) / (new_tokens - 1)."""
    sync = make_sync(device)
    new_tokens = settings["new_tokens"]
    generator = torch.Generator().manual_seed(settings["seed"])
    lengths = settings["prompt_lengths"]
    prompts = {n: torch.randint(3, settings["vocab_size"], (1, n), generator=generator).to(device) for n in lengths}
    for model in models.values():
        model.eval()
    per_token = {(n, name): [] for n in lengths for name in DECODE_VARIANTS}
    prefill = {(n, name): [] for n in lengths for name in DECODE_VARIANTS}
    generated = {}
    with torch.inference_mode():
        for name in DECODE_VARIANTS:  # warm-up
            DECODERS[name](models, prompts[lengths[0]], min(new_tokens, 4), sync)
        for repeat in range(settings["repeats"]):
            for n in lengths:
                for name in rotated(DECODE_VARIANTS, repeat):
                    prefill_s, decode_s, tokens = DECODERS[name](models, prompts[n], new_tokens, sync)
                    per_token[n, name].append(1e3 * decode_s / (new_tokens - 1))
                    prefill[n, name].append(1e3 * prefill_s)
                    generated[n, name] = tokens
    for model in models.values():
        model.train()

    short, long = min(lengths), max(lengths)
    results = {"ms_per_token": {}, "prefill_ms": {}, "ratios": {}}
    for n in lengths:
        results["ms_per_token"][str(n)] = {name: summarize(per_token[n, name]) for name in DECODE_VARIANTS}
        results["prefill_ms"][str(n)] = {name: summarize(prefill[n, name]) for name in DECODE_VARIANTS}
        # Latency ratios: above 1 means the numerator is slower.
        results["ratios"][f"generate/bare_loop@{n}"] = compare(per_token[n, "generate"], per_token[n, "bare_loop"])
        results["ratios"][f"forward_loop/bare_loop@{n}"] = compare(
            per_token[n, "forward_loop"], per_token[n, "bare_loop"]
        )
        results["ratios"][f"generate/forward_loop@{n}"] = compare(
            per_token[n, "generate"], per_token[n, "forward_loop"]
        )
    for name in DECODE_VARIANTS:
        results["ratios"][f"{name}@{long}/{name}@{short}"] = compare(per_token[long, name], per_token[short, name])
    # Greedy decoding with the same weights: all variants should pick the same tokens (a near-tie in fp32 may
    # differ between kernels; this is reported, not asserted).
    results["same_tokens"] = {
        str(n): all(generated[n, name] == generated[n, "bare_loop"] for name in DECODE_VARIANTS) for n in lengths
    }
    return results


# ----- report -----
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device) -> dict:
    try:
        package_version = importlib.metadata.version("rnn-lm-hf")
    except importlib.metadata.PackageNotFoundError:
        package_version = None
    info = {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rnn_lm_hf": package_version,
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()  # other work on the machine skews absolute numbers
    return info


def verdicts(results: dict, settings: dict) -> dict:
    """The requirement's targets, judged on the median per-repeat ratios."""
    checks = {}
    train = results.get("train", {}).get("fp32")
    if train:
        for key in ("ours/bare_fused", "ours_stateful/bare_fused_stateful"):
            value = train["ratios"][key]["median"]
            checks[f"train {key}"] = {"value": value, "target": f">= {TRAIN_TARGET}", "pass": value >= TRAIN_TARGET}
    decode = results.get("decode")
    if decode:
        short, long = min(settings["prompt_lengths"]), max(settings["prompt_lengths"])
        value = decode["ratios"][f"generate@{long}/generate@{short}"]["median"]
        checks[f"decode generate@{long}/generate@{short}"] = {
            "value": value,
            "target": f"<= {FLATNESS_TARGET}",
            "pass": value <= FLATNESS_TARGET,
        }
        for n in settings["prompt_lengths"]:
            value = decode["ratios"][f"generate/bare_loop@{n}"]["median"]
            checks[f"decode generate/bare_loop@{n}"] = {
                "value": value,
                "target": f"<= {DECODE_TARGET}",
                "pass": value <= DECODE_TARGET,
            }
    return checks


def span(stats: dict, fmt: str) -> str:
    return f"{stats['median']:{fmt}} [{stats['min']:{fmt}}, {stats['max']:{fmt}}]"


def print_report(results: dict) -> None:
    env, settings = results["environment"], results["settings"]
    print(
        f"\n{env['device_name']} | threads {env['threads']} | torch {env['torch']} | transformers "
        f"{env['transformers']} | {settings['num_layers']}x{settings['hidden_size']} LSTM, vocab "
        f"{settings['vocab_size']} | {settings['repeats']} interleaved repeats, median [min, max]"
    )
    for precision, train in results.get("train", {}).items():
        print(f"\nTraining ({precision}, batch {settings['batch_size']}, bptt {settings['bptt']}): tokens/s")
        for name, stats in train["tokens_per_s"].items():
            print(f"  {name:<22} {span(stats, ',.0f')}")
        for key, ratio in train["ratios"].items():
            print(f"  {key:<36} {span(ratio, '.3f')}")
    decode = results.get("decode")
    if decode:
        print(f"\nDecode (batch 1, {settings['new_tokens']} new tokens): ms/token, prefill excluded")
        for n, per_variant in decode["ms_per_token"].items():
            cells = "  ".join(f"{name} {span(stats, '.3f')}" for name, stats in per_variant.items())
            print(f"  prompt {n:>5}: {cells}")
        for key, ratio in decode["ratios"].items():
            print(f"  {key:<36} {span(ratio, '.3f')}")
        print(f"  same greedy tokens in all variants: {decode['same_tokens']}")
    print("\nTargets (median of per-repeat ratios):")
    for key, check in results["targets"].items():
        print(f"  {key:<46} {check['value']:.3f} (target {check['target']}): {'PASS' if check['pass'] else 'FAIL'}")


# ----- command line -----
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    parser.add_argument("--sizes", choices=sorted(PRESETS), default="small", help="size preset (see PRESETS)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per variant (preset default)")
    parser.add_argument("--train-steps", type=int, default=None, help="training steps per timed measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per variant first")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per decode measurement")
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=None, help="decode prompt lengths")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout of all models (PTB medium recipe: 0.5)")
    parser.add_argument("--tie", action="store_true", help="tie embedding and softmax weights in all models")
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (does not change the speed)")
    parser.add_argument("--clip", type=float, default=0.25, help="gradient-norm clipping (word_language_model)")
    parser.add_argument("--bf16", action="store_true", help="also time training under bf16 autocast (CUDA only)")
    parser.add_argument("--only", choices=["train", "decode"], default=None, help="run one measurement only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/speed_<dev>.json)")
    args = parser.parse_args(argv)
    if args.bf16 and args.device != "cuda":
        parser.error("--bf16 is measured on --device cuda only (the bf16 reference figures are GPU ones).")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False.")
    return args


def resolve_settings(args: argparse.Namespace) -> dict:
    settings = dict(PRESETS[args.sizes], sizes=args.sizes)
    overrides = {
        "repeats": args.repeats,
        "train_steps": args.train_steps,
        "new_tokens": args.new_tokens,
        "prompt_lengths": args.prompt_lengths,
    }
    settings.update({key: value for key, value in overrides.items() if value is not None})
    settings.update(warmup=args.warmup, dropout=args.dropout, tie=args.tie, lr=args.lr, clip=args.clip, seed=args.seed)
    if settings["new_tokens"] < 2:
        raise ValueError("--new-tokens must be at least 2: latency is measured between the first and last token.")
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # generate()'s notices would drown the table
    device = torch.device(args.device)
    settings = resolve_settings(args)
    torch.manual_seed(settings["seed"])

    models = build_models(settings, device)
    parameters = {name: count_parameters(model) for name, model in models.items()}
    if len(set(parameters.values())) != 1:
        raise RuntimeError(f"Models differ in size, the comparison would be unfair: {parameters}")
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(device),
        "settings": settings,
        "parameters": parameters,
        "checks": {"max_loss_difference": check_same_loss(models, settings, device)},
    }
    if args.only in (None, "train"):
        results["train"] = {"fp32": bench_train(models, settings, device)}
        if args.bf16:
            results["train"]["bf16_autocast"] = bench_train(models, settings, device, torch.bfloat16)
    if args.only in (None, "decode"):
        results["decode"] = bench_decode(models, settings, device)
    if hasattr(os, "getloadavg"):
        results["environment"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = verdicts(results, settings)

    print_report(results)
    out = args.out or REPO_ROOT / "bench" / "results" / f"speed_{args.device}_{args.sizes}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {out}")
    return results


if __name__ == "__main__":
    main()
