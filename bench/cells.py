"""Every cell type of the package's table (`CELL_TYPES`) side by side: training throughput and decoding cost.

For each width, one `RNNLMForCausalLM` per cell (same layers, vocabulary, dropout, tied embeddings) trains on the
same random batches, variants interleaved (A, B, C, A, ... the order rotated every repeat, so machine noise hits them
alike), and each cell's ratio to the LSTM of the same repeat is reported. Two scopes of a training step:
- `lm`: the language model's step, forward + cross-entropy over the vocabulary + backward + clipping + SGD;
- `layers`: the cell's own share, embeddings and recurrent layers only (forward, a fixed random projection of the
  last layer's states as the loss, backward, clipping, SGD), without the output layer every cell pays alike.
Decoding: ms per greedy `generate` token at batch 1 after a prompt, prefill excluded (one O(1) step per token for
every cell). Figures are median [min, max] over the repeats.

    python bench/cells.py --threads 1 --out bench/results/cells_cpu.json      # 2x256 and 2x650, bptt 70, fp32
    python bench/cells.py --threads 1 --bf16 --compile --out bench/results/cells_cpu_bf16_compiled.json
"""

import argparse
import datetime
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path


BENCH = Path(__file__).resolve().parent
for path in (BENCH.parent, BENCH):  # this checkout's package, and speed.py's helpers beside this script
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
import transformers  # noqa: E402
from speed import compare, count_parameters, environment, rotated, summarize, timed_generate  # noqa: E402
from torch import nn  # noqa: E402

from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM  # noqa: E402
from rnn_lm_hf.configuration_rnn_lm import CELL_TYPES  # noqa: E402


REFERENCE = "lstm"  # every cell's throughput is also given as a ratio to this one's
SCOPES = ("lm", "layers")  # the whole language-model step, and the embeddings and recurrent layers alone


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", choices=list(CELL_TYPES), default=list(CELL_TYPES))
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 650], help="hidden size of every layer")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=10000, help="vocabulary size (PTB's 10k)")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=70, help="tokens per row of a training batch")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--train-steps", type=int, default=3, help="training steps per timed measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per cell first")
    parser.add_argument("--prompt", type=int, default=64, help="prompt length before the timed decoding")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per decode measurement")
    parser.add_argument("--bf16", action="store_true", help="train under bf16 autocast (CPU or CUDA)")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile (every cell alike)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "cells_cpu.json")
    args = parser.parse_args(argv)
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2: decoding is timed between the first and the last token.")
    return args


def build(cell: str, width: int, args, device: torch.device) -> RNNLMForCausalLM:
    config = RNNLMConfig(
        vocab_size=args.vocab,
        hidden_size=width,
        num_hidden_layers=args.layers,
        cell_type=cell,
        dropout=args.dropout,
    )
    return RNNLMForCausalLM(config).to(device)


def train_step(model: RNNLMForCausalLM, batches: list, scope: str, compile: bool, clip: float = 0.25):
    """A closure running one training step on batch i of the given scope (the targets are already shifted)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    forward = model if scope == "lm" else model.model
    forward = torch.compile(forward) if compile else forward
    probe = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1)).to(model.device)

    def step(i: int, autocast) -> None:
        input_ids, targets = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            if scope == "lm":
                loss = forward(input_ids=input_ids, shift_labels=targets).loss
            else:
                loss = (forward(input_ids=input_ids).last_hidden_state.float() @ probe).square().mean()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def bench_width(width: int, args, device: torch.device) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else nullcontext
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.bptt)
    batches = [
        tuple(torch.randint(3, args.vocab, shape, generator=generator).to(device) for _ in range(2)) for _ in range(4)
    ]  # (input_ids, next tokens)
    models = {cell: build(cell, width, args, device) for cell in args.cells}
    variants = [(cell, scope) for cell in models for scope in SCOPES]
    steps = {(cell, scope): train_step(models[cell], batches, scope, args.compile) for cell, scope in variants}
    counter = dict.fromkeys(variants, 0)

    def timed_training(variant: tuple[str, str], num_steps: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(num_steps):
            steps[variant](counter[variant], autocast)
            counter[variant] += 1
        sync()
        return time.perf_counter() - start

    for variant in variants:  # with --compile, also the compilation
        timed_training(variant, args.warmup)
    tokens = args.train_steps * args.batch * args.bptt
    throughput = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for variant in rotated(tuple(variants), repeat):
            throughput[variant].append(tokens / timed_training(variant, args.train_steps))

    prompt = torch.randint(3, args.vocab, (1, args.prompt), generator=generator).to(device)
    ms_per_token = {cell: [] for cell in models}
    with torch.inference_mode():
        for model in models.values():
            model.eval()
            timed_generate(model, prompt, 4, sync, do_sample=False)  # warm-up
        for repeat in range(args.repeats):
            for cell in rotated(tuple(models), repeat):
                ms_per_token[cell].append(timed_generate(models[cell], prompt, args.new_tokens, sync, do_sample=False))
    reference = REFERENCE if REFERENCE in models else None
    return {
        "parameters": {cell: count_parameters(model) for cell, model in models.items()},
        "train_tokens_per_s": {
            scope: {cell: summarize(throughput[cell, scope]) for cell in models} for scope in SCOPES
        },
        "decode_ms_per_token": {cell: summarize(values) for cell, values in ms_per_token.items()},
        # Above 1: the cell trains faster than the LSTM / decodes slower than it (paired per repeat).
        "train_speedup_vs_lstm": {
            scope: {cell: compare(throughput[cell, scope], throughput[reference, scope]) for cell in models}
            for scope in SCOPES
            if reference
        },
        "decode_cost_vs_lstm": {
            cell: compare(ms_per_token[cell], ms_per_token[reference]) for cell in models if reference
        },
    }


def print_report(results: dict) -> None:
    settings = results["settings"]
    precision = ("bf16 autocast" if settings["bf16"] else "fp32") + (", torch.compile" if settings["compile"] else "")
    print(
        f"\n{results['environment']['device_name']}, {results['environment']['threads']} thread(s), {precision}, "
        f"{settings['layers']} layers, batch {settings['batch']}, bptt {settings['bptt']}, vocab {settings['vocab']}"
    )
    print(
        "| width | cell | parameters | LM step tokens/s | x LSTM | layers tokens/s | x LSTM | decode ms/token | x LSTM |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for width, row in results["widths"].items():
        for cell in row["parameters"]:
            cells = [f"{width}", CELL_TYPES[cell].name, f"{row['parameters'][cell]:,}"]
            for scope in SCOPES:
                train, speedup = row["train_tokens_per_s"][scope][cell], row["train_speedup_vs_lstm"].get(scope, {})
                cells += [f"{train['median']:,.0f} [{train['min']:,.0f}, {train['max']:,.0f}]", ratio(speedup, cell)]
            decode = row["decode_ms_per_token"][cell]
            cells += [f"{decode['median']:.2f} [{decode['min']:.2f}, {decode['max']:.2f}]"]
            cells += [ratio(row["decode_cost_vs_lstm"], cell)]
            print("| " + " | ".join(cells) + " |")


def ratio(ratios: dict, cell: str) -> str:
    return f"{ratios[cell]['median']:.2f}" if cell in ratios else "-"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "device", "threads")}
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(device),
        "settings": settings,
        "widths": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for width in args.widths:
        results["widths"][str(width)] = bench_width(width, args, device)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # a run cut short keeps the widths done
    print_report(results)
    print(f"\nWrote {args.out}")
    return results


if __name__ == "__main__":
    main()
