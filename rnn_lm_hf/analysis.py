"""Two measurements behind the RNN lecture, for any causal LM of the package and any text (`rnn-lm analyze`).

- Gradient flow (Bengio et al. 1994; Pascanu et al. 2013, https://arxiv.org/abs/1211.5063): the norm of dJ_t/dh_j
  (each layer's output state) and of dJ_t/de_j (input embeddings) against the distance t - j, averaged over positions
  and rows, where J_t is the cross-entropy of the token after position t; plus the largest singular value of each
  W_hh. A vanilla RNN's curve decays (or grows) geometrically; LSTM/GRU gates are there to flatten it.
- Targeted syntactic evaluation (`minimal_pairs`): accuracy on minimal pairs, broken down by their fields.

    rnn-lm analyze gradients MODEL [MODEL ...] --file F --output_dir D   # gradients.json + gradients.png
    rnn-lm analyze agreement MODEL --pairs F.jsonl --output_dir D        # agreement.json + agreement.png
    rnn-lm analyze pairs --output F.jsonl --n 1000 [--lexicon ptb]       # template agreement pairs

MODEL is a saved folder, `init:FOLDER` for a freshly initialised model of that folder's config (seeded), and may be
prefixed with `name=` to label it in the plot.
"""

import argparse
import json
from pathlib import Path

import torch

from . import minimal_pairs
from .evaluation import TextOptions, load_stream
from .hub import check_causal_lm


# ----- gradient flow -----


def unrolled_forward(
    model, input_ids: torch.LongTensor
) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
    """The model's forward pass one time step at a time, so every state h_j is a node of the graph.

    Returns the logits (batch, seq_len, vocab_size), the input embeddings (batch, seq_len, input_size) as a leaf
    that requires grad, and `states[layer][j]`, the output h_j (batch, hidden) of each layer at each position, which
    feeds both the next time step and the layer above. LSTM cells carry c_j alongside (not a node here). Eval mode:
    no dropout. Bidirectional encoders are not causal LMs and are rejected.
    """
    if getattr(model.config, "bidirectional", False):
        raise ValueError("Gradient flow is measured on causal (unidirectional) LMs; this model is bidirectional.")
    base = model.model
    embeds = base.embed(input_ids).detach().requires_grad_(True)  # (batch, seq_len, input_size)
    layer_input, states = embeds, []
    for layer in base.layers:
        state, outputs = None, []
        for j in range(layer_input.shape[1]):
            out, state = layer(
                layer_input[:, j : j + 1], state
            )  # the model's own step; state (batch, num_states, hidden)
            h = out[:, 0]  # (batch, hidden): one tensor for both paths, to the next step and to the layer above
            state = torch.cat([h[:, None], state[:, 1:]], 1)  # h as that node; an LSTM's c rides alongside
            outputs.append(h)
        states.append(outputs)
        layer_input = torch.stack(outputs, 1)  # (batch, seq_len, hidden)
    return model.logits(layer_input), embeds, states


def gradient_flow(model, input_ids: torch.LongTensor) -> dict:
    """Mean ||dJ_t/dh_j|| per layer and mean ||dJ_t/de_j|| for each distance d = t - j (0 .. seq_len - 2), over all
    positions t and rows; J_t = cross-entropy of token t + 1 given tokens 0..t, one backward pass per t."""
    was_training = model.training
    model.eval()
    if getattr(model.config, "start_after_eos", False):  # the model reads an <eos> before a fresh state
        eos = torch.full_like(input_ids[:, :1], model.config.eos_token_id)
        input_ids = torch.cat([eos, input_ids], 1)
    input_ids = input_ids.to(next(model.parameters()).device)
    with torch.enable_grad():
        logits, embeds, states = unrolled_forward(model, input_ids)
        length, num_layers = input_ids.shape[1], len(states)
        sums = torch.zeros(num_layers + 1, length - 1, dtype=torch.float64)  # [embeddings, layer 0, ...] x distance
        counts = torch.zeros(length - 1, dtype=torch.float64)
        for t in range(length - 1):
            loss = torch.nn.functional.cross_entropy(logits[:, t].float(), input_ids[:, t + 1], reduction="sum")
            nodes = [embeds] + [h for layer in states for h in layer[: t + 1]]
            grads = torch.autograd.grad(loss, nodes, retain_graph=t < length - 2, allow_unused=True)
            distances = torch.arange(t, -1, -1)  # position j = 0..t is at distance t - j
            sums[0, distances] += grads[0][:, : t + 1].float().norm(dim=-1).mean(0).double().cpu()
            for layer in range(num_layers):
                layer_grads = grads[1 + layer * (t + 1) : 1 + (layer + 1) * (t + 1)]  # h_0..h_t of this layer
                norms = torch.stack([_norm(g, states[layer][0]) for g in layer_grads])  # (t + 1,)
                sums[1 + layer, distances] += norms.double().cpu()
            counts[: t + 1] += 1
    model.train(was_training)
    means = sums / counts
    return {
        "distance": list(range(length - 1)),
        "embeddings": means[0].tolist(),
        "layers": [means[1 + layer].tolist() for layer in range(num_layers)],
        "positions_per_distance": counts.long().tolist(),
        "rows": int(input_ids.shape[0]),
    }


def _norm(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    # A state with no path to J_t (never happens for j <= t, kept for safety) has a zero gradient.
    return torch.zeros((), device=like.device) if grad is None else grad.float().norm(dim=-1).mean(0)


def recurrent_spectral_norms(model) -> list[dict]:
    """The largest singular value of each layer's W_hh, whole and per gate (LSTM: i, f, g, o; GRU: r, z, n). A cell
    whose state enters no matrix (no `weight_hh_l0`) has none: `sigma_max` None."""
    result = []
    for layer in model.model.layers:
        if not hasattr(layer.rnn, "weight_hh_l0"):
            result.append({"sigma_max": None, "per_gate": {}})
            continue
        weight = layer.rnn.weight_hh_l0.detach().float()  # (gates * hidden, hidden)
        gates = model.config.cell.gates
        per_gate = {
            name: float(torch.linalg.matrix_norm(w, ord=2)) for name, w in zip(gates, weight.chunk(len(gates)))
        }
        result.append({"sigma_max": float(torch.linalg.matrix_norm(weight, ord=2)), "per_gate": per_gate})
    return result


def text_rows(model_path: str, tokenizer, file: str, max_length: int, num_rows: int) -> torch.LongTensor:
    """The first `num_rows` x `max_length` tokens of `file`, prepared as the run prepared its text, one row each."""
    if not Path(file).is_file():
        raise FileNotFoundError(f"No text file {file!r}: pass --file with the text to measure gradients on.")
    tokens = torch.as_tensor(load_stream(file, tokenizer, TextOptions.of_run(model_path)), dtype=torch.long)
    rows = min(num_rows, len(tokens) // max_length)
    if rows == 0:
        raise ValueError(f"{file} has {len(tokens)} tokens, fewer than one row of --max_length {max_length}.")
    return tokens[: rows * max_length].view(rows, max_length)


# ----- loading and plotting -----


def load(spec: str, seed: int = 0):
    """(label, model, tokenizer, folder) from `[name=]FOLDER` or `[name=]init:FOLDER`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    fresh = path.startswith("init:")
    folder = path.removeprefix("init:")
    if not Path(folder, "config.json").is_file():
        raise FileNotFoundError(f"No saved model in {folder!r} (no config.json): pass a folder written by training.")
    check_causal_lm(folder, "rnn-lm analyze")
    if fresh:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    label = label or Path(folder).name + (" (init)" if fresh else "")
    return label, model.eval(), AutoTokenizer.from_pretrained(folder), folder


def plot_gradient_flow(results: dict[str, dict], path: str | Path) -> None:
    """One panel for the embeddings and one per layer: mean gradient norm (log scale) against the distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_panels = 1 + max(len(r["gradients"]["layers"]) for r in results.values())
    figure, axes = plt.subplots(1, num_panels, figsize=(5.5 * num_panels, 4), squeeze=False)
    for label, result in results.items():
        flow, sigmas = result["gradients"], [s["sigma_max"] for s in result["spectral_norms"]]
        curves = [flow["embeddings"], *flow["layers"]]
        for panel, curve in enumerate(curves):
            suffix = f" (σmax W_hh {sigmas[panel - 1]:.2f})" if panel and sigmas[panel - 1] is not None else ""
            axes[0, panel].plot(flow["distance"], curve, label=label + suffix)
    for panel, axis in enumerate(axes[0]):
        axis.set_yscale("log")
        axis.set_xlabel("distance t - j (tokens)")
        axis.set_ylabel("mean ||dJ_t/de_j||" if panel == 0 else f"mean ||dJ_t/dh_j||, layer {panel - 1}")
        axis.set_title("input embeddings" if panel == 0 else f"layer {panel - 1} states")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_agreement(summary: dict, label: str, path: str | Path) -> None:
    """One bar panel per breakdown field (three per row), with the overall accuracy and chance (0.5) as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = [f for f in summary["by"] if 1 < len(summary["by"][f]) <= 20] or list(summary["by"])[:1]
    breakdown = {field: summary["by"][field] for field in fields}
    if not breakdown:  # pairs with only the texts: one bar, the overall accuracy
        breakdown = {"pair": {"all": {"accuracy": summary["accuracy"], "count": summary["num_pairs"]}}}
    fields = list(breakdown)
    columns = min(3, len(fields))
    rows = -(-len(fields) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.6 * rows), squeeze=False)
    for axis in axes.flat[len(fields) :]:
        axis.set_visible(False)
    for axis, field in zip(axes.flat, fields):
        groups = breakdown[field]
        axis.bar(range(len(groups)), [g["accuracy"] for g in groups.values()], color="tab:blue")
        axis.set_xticks(range(len(groups)), [f"{k}\n(n={g['count']})" for k, g in groups.items()], fontsize=7)
        axis.axhline(0.5, color="grey", linestyle=":", label="chance")
        axis.axhline(summary["accuracy"], color="tab:red", linestyle="--", label=f"all: {summary['accuracy']:.3f}")
        axis.set_ylim(0, 1)
        axis.set_title(f"{label}: by {field}", fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----- command line -----


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-lm analyze", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gradients = commands.add_parser("gradients", help="gradient norm against distance, and sigma_max of W_hh")
    gradients.add_argument("models", nargs="+", metavar="MODEL", help="[name=]FOLDER or [name=]init:FOLDER")
    gradients.add_argument("--file", required=True, help="text to measure on, prepared as each run prepared its own")
    gradients.add_argument("--output_dir", required=True)
    gradients.add_argument("--max_length", type=int, default=50, help="tokens per row (distances 0..max_length-2)")
    gradients.add_argument("--num_rows", type=int, default=32, help="rows taken from the start of the file")
    gradients.add_argument("--seed", type=int, default=0, help="seed of init: models")
    agreement = commands.add_parser("agreement", help="accuracy on minimal pairs, by every other field")
    agreement.add_argument("model", metavar="MODEL")
    agreement.add_argument("--pairs", required=True, help="jsonl: prefix/good/bad or sentence_good/sentence_bad")
    agreement.add_argument("--output_dir", required=True)
    agreement.add_argument("--batch_size", type=int, default=64)
    agreement.add_argument("--by", nargs="*", default=None, help="fields to break down by (default: all)")
    agreement.add_argument("--no_prepend_eos", action="store_true", help="do not start each text after <eos>")
    agreement.add_argument("--context", default="", help="text read (unscored) before every pair, e.g. 'x . <eos>'")
    pairs = commands.add_parser("pairs", help="write template subject-verb agreement pairs")
    pairs.add_argument("--output", required=True, help="the .jsonl file to write")
    pairs.add_argument("--n", type=int, default=1000)
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--lexicon", default="demo", choices=sorted(minimal_pairs.LEXICONS))
    pairs.add_argument("--kind", default="prefix", choices=["prefix", "sentence"])
    pairs.add_argument("--p_attractor", type=float, default=0.5)
    return parser


def main(argv: list[str]) -> int:
    """`rnn-lm analyze ...`; bad input raises ValueError/FileNotFoundError with a one-line message."""
    args = build_parser().parse_args(argv)
    if args.command == "pairs":
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}.")
        pairs = minimal_pairs.generate_agreement_pairs(args.n, args.seed, args.lexicon, args.kind, args.p_attractor)
        minimal_pairs.write_pairs(pairs, args.output)
        print(f"wrote {len(pairs)} pairs to {args.output}")
        return 0
    output_dir = Path(args.output_dir)
    if args.command == "gradients":
        if args.max_length < 2 or args.num_rows < 1:
            raise ValueError("--max_length must be >= 2 and --num_rows >= 1.")
        results = {}
        for spec in args.models:
            label, model, tokenizer, folder = load(spec, args.seed)
            rows = text_rows(folder, tokenizer, args.file, args.max_length, args.num_rows)
            results[label] = {
                "model": spec,
                "gradients": gradient_flow(model, rows),
                "spectral_norms": recurrent_spectral_norms(model),
            }
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "gradients.json").write_text(json.dumps({"file": args.file, "models": results}, indent=1))
        plot_gradient_flow(results, output_dir / "gradients.png")
    else:
        label, model, tokenizer, _ = load(args.model)
        pairs = minimal_pairs.read_pairs(args.pairs)
        scores = minimal_pairs.score_pairs(
            model, tokenizer, pairs, args.batch_size, not args.no_prepend_eos, args.context
        )
        summary = {"model": args.model, "pairs": args.pairs, "context": args.context}
        summary.update(minimal_pairs.summarize(pairs, scores, args.by))
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "agreement.json").write_text(json.dumps(summary, indent=1))
        plot_agreement(summary, label, output_dir / "agreement.png")
        print(f"{label}: accuracy {summary['accuracy']:.4f} on {summary['num_pairs']} pairs")
    print(f"wrote {output_dir}/{args.command}.json and .png")
    return 0
