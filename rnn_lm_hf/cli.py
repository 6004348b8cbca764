"""`rnn-lm`: train, evaluate, generate, the demo, and Hub sharing from the command line.

rnn-lm demo                                   # train a small LSTM LM on the built-in corpus, print samples
rnn-lm train training/configs/ptb_small_zaremba.json
rnn-lm train --train_file my.txt --output_dir out --config_overrides "cell_type=gru"
rnn-lm evaluate out --file test.txt           # stateful stream perplexity
rnn-lm generate out "the writer of" --do_sample --top_k 40
rnn-lm train-tagger ... / rnn-lm train-classifier ...
rnn-lm card out / rnn-lm push out org/name
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path


def run_main(main, argv: list[str] | None = None) -> int:
    """Run a training script's `main`: bad input ends with one `error:` line naming the problem and the fix (exit
    status 2), never a traceback. DataError/DataFormatError are ValueErrors; a missing file is an OSError."""
    try:
        main(argv)
    except (ValueError, OSError) as error:
        logging.getLogger(main.__module__).debug("Traceback", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def parse_script_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """`script.py [args.json|args.yaml] [--flag value ...]` as in run_clm; flags after the file override its values
    (benchmark drivers, `rnn-lm train cfg.json --output_dir x`)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or not argv[0].endswith((".json", ".yaml", ".yml")):
        return parser.parse_args_into_dataclasses(args=argv)
    path = Path(argv[0])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (relative to {Path.cwd()})")
    if path.suffix == ".json":
        values = json.loads(path.read_text())
    else:
        import yaml

        values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    if len(argv) == 1:
        return parser.parse_dict(values)
    flags = []
    for key, value in values.items():
        if isinstance(value, list):
            flags += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            flags += [f"--{key}", json.dumps(value)]
        elif value is not None:
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return parser.parse_args_into_dataclasses(args=[*flags, *argv[1:]])


def run_training_script(module: str, argv: list[str]) -> int:
    import importlib

    script = importlib.import_module(f"rnn_lm_hf.training.{module}")
    return script.cli(argv)


def demo(argv: list[str]) -> int:
    from rnn_lm_hf.training.train_clm import DEMO_CONFIG

    return run_training_script("train_clm", [str(DEMO_CONFIG), *argv])


def evaluate_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lm evaluate", description="Perplexity of a saved causal LM on a file.")
    parser.add_argument("model", help="A saved model folder (or Hub id) with its tokenizer.")
    parser.add_argument("--file", required=True, help="Text file, one sentence/line (PTB style) or raw text.")
    parser.add_argument("--bptt", type=int, default=35, help="Segment length; the state is carried across segments.")
    parser.add_argument("--batch_size", type=int, default=1, help="Parallel streams (1 = exact: one stream).")
    parser.add_argument("--per_block", action="store_true", help="Reset the state every block instead.")
    parser.add_argument("--no_eos", action="store_true", help="Do not append <eos> after each line.")
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    metrics = evaluate_perplexity(
        args.model, args.file, args.bptt, args.batch_size, not args.per_block, not args.no_eos, args.trust_remote_code
    )
    print(json.dumps(metrics, indent=2))
    return 0


def evaluate_perplexity(
    model_path: str,
    file: str,
    bptt: int = 35,
    batch_size: int = 1,
    stateful: bool = True,
    add_eos: bool = True,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Token-weighted perplexity through the same evaluation loop training uses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from rnn_lm_hf.data import eval_stream_segments, group_into_blocks, load_text_datasets, tokenize_to_stream
    from rnn_lm_hf.trainer import RNNLMTrainer

    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    split = load_text_datasets(train_file=file, validation_split_percentage=0)["train"]
    stream = tokenize_to_stream(split, tokenizer, add_eos=add_eos)
    if stateful:
        dataset = eval_stream_segments(stream, bptt, 1, batch_size, tokenizer.pad_token_id, name=file)
    else:
        dataset = group_into_blocks(stream, bptt, tokenizer.pad_token_id, name=file)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=batch_size, report_to="none", remove_unused_columns=False
        )
        trainer = RNNLMTrainer(model=model, args=args, processing_class=tokenizer)
        return trainer.evaluate(dataset, metric_key_prefix="eval")


def generate_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lm generate", description="Generate text with a saved causal LM.")
    parser.add_argument("model", help="A saved model folder (or Hub id) with its tokenizer.")
    parser.add_argument("prompt", nargs="+", help="One or more prompts.")
    parser.add_argument("--max_new_tokens", type=int, default=30)
    parser.add_argument("--do_sample", action="store_true", help="Sample instead of greedy search.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--num_return_sequences", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)

    from transformers import pipeline, set_seed

    set_seed(args.seed)
    generator = pipeline("text-generation", model=args.model, trust_remote_code=args.trust_remote_code)
    options = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.do_sample,
        "num_beams": args.num_beams,
        "num_return_sequences": args.num_return_sequences,
    }
    if args.do_sample:
        options.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    for prompt in args.prompt:
        for output in generator(prompt, **options):
            print(output["generated_text"].strip())
    return 0


def plot_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lm plot", description="Training curves of a run as a PNG.")
    parser.add_argument("run_dir", help="An output folder holding training_log.csv.")
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/training_curves.png).")
    args = parser.parse_args(argv)
    path = plot_training_log(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0


def plot_training_log(run_dir: str, out: str | None = None) -> Path:
    """Training loss and every evaluation perplexity/loss against the step, from `training_log.csv`."""
    import csv

    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    log = Path(run_dir) / "training_log.csv"
    if not log.is_file():
        raise FileNotFoundError(f"{log} is missing: it is written by the training scripts (CSVLogCallback).")
    series: dict[str, list[tuple[int, float]]] = {}
    with log.open() as handle:
        for row in csv.DictReader(handle):
            series.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    panels = [name for name in ("loss", "eval_loss", "eval_perplexity") if name in series]
    if not panels:
        raise ValueError(f"{log} has no loss or evaluation rows to plot (set --logging_steps / --eval_strategy).")
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for axis, name in zip(axes[0], panels):
        steps, values = zip(*series[name])
        axis.plot(steps, values, marker="o" if len(steps) < 50 else None)
        axis.set(title=name, xlabel="step")
        if name.endswith("perplexity"):
            axis.set_yscale("log")
    figure.tight_layout()
    path = Path(out) if out else Path(run_dir) / "training_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def hub_command(name: str, argv: list[str]) -> int:
    from rnn_lm_hf import hub

    return hub.main([name, *argv])


COMMANDS = {
    "demo": demo,
    "train": lambda argv: run_training_script("train_clm", argv),
    "train-tagger": lambda argv: run_training_script("train_token_classification", argv),
    "train-classifier": lambda argv: run_training_script("train_sequence_classification", argv),
    "evaluate": evaluate_command,
    "generate": generate_command,
    "plot": plot_command,
    "card": lambda argv: hub_command("card", argv),
    "push": lambda argv: hub_command("push", argv),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
            return 2
        return 0
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
