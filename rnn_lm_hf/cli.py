"""`rnn-lm`: train, evaluate, generate, the demo, and Hub sharing from the command line.

rnn-lm demo                                   # train a small LSTM LM on the built-in corpus, print samples
rnn-lm train training/configs/ptb_small_zaremba.json
rnn-lm train --train_file my.txt --output_dir out --config_overrides "cell_type=gru"
rnn-lm evaluate out --file test.txt           # stateful stream perplexity
rnn-lm generate out "the writer of" --do_sample --top_k 40
rnn-lm train-tagger --train_file train.conll --validation_file dev.conll --output_dir tagger   # token<TAB>tag lines
rnn-lm train-classifier --train_file train.tsv --validation_file dev.tsv --output_dir classifier  # text<TAB>label
rnn-lm tokenizer corpus.txt --kind bpe --output_dir tok   # a tokenizer for your own Trainer code
rnn-lm analyze gradients out --file test.txt --output_dir analysis   # gradient flow against distance
rnn-lm analyze agreement out --pairs pairs.jsonl --output_dir analysis  # minimal-pair (agreement) accuracy
rnn-lm plot out                               # training curves as a PNG
rnn-lm card out                               # (re)write the model card
rnn-lm check out                              # what `push` would upload, or what is wrong
rnn-lm push out org/name                      # upload (token: HF_TOKEN or `hf auth login`)
rnn-lm --threads 2 evaluate out --file test.txt   # CPU threads (default: $OMP_NUM_THREADS, else half the CPUs, <= 4)

Every command takes --help.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path


def train(argv: list[str]) -> int:
    from rnn_lm_hf.training import train_clm

    return train_clm.cli(argv)


def train_tagger(argv: list[str]) -> int:
    from rnn_lm_hf.training import train_token_classification

    return train_token_classification.cli(argv)


def train_classifier(argv: list[str]) -> int:
    from rnn_lm_hf.training import train_sequence_classification

    return train_sequence_classification.cli(argv)


def demo(argv: list[str]) -> int:
    from rnn_lm_hf.training.train_clm import DEMO_CONFIG

    return train([str(DEMO_CONFIG), *argv])


def evaluate_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnn-lm evaluate",
        description="Perplexity of a saved causal LM on a file: static (stateful stream), and optionally with dynamic "
        "evaluation (Krause et al. 2018) and a neural cache (Grave et al. 2017). Text is prepared as the run prepared "
        "its own (run_info.json): <eos> per line or kept newlines. The adaptive methods' settings are tuned on "
        "held-out text first (--tune_file, else the run's own validation text), over grids that include 'off' (the "
        "static model); a setting given as a flag is kept as given.",
    )
    parser.add_argument("model", help="A saved model folder (or Hub id) with its tokenizer.")
    parser.add_argument("--file", required=True, help="Text file, one sentence/line (PTB style) or raw text.")
    parser.add_argument(
        "--bptt",
        type=int,
        help="Segment length; the state is carried across segments (default: the run's block_size, else 35).",
    )
    parser.add_argument("--batch_size", type=int, default=1, help="Parallel streams (1 = exact: one stream).")
    parser.add_argument("--per_block", action="store_true", help="Reset the state every block instead.")
    parser.add_argument("--add_eos", type=_bool, help="Append <eos> after each line (default: as trained).")
    parser.add_argument("--keep_linebreaks", type=_bool, help="Keep each line's newline (default: as trained).")
    parser.add_argument("--no_eos", action="store_true", help="Same as --add_eos false.")
    parser.add_argument("--dynamic_eval", action="store_true", help="Also report dynamic_eval_perplexity.")
    parser.add_argument("--neural_cache", action="store_true", help="Also report neural_cache_perplexity.")
    parser.add_argument(
        "--tune_file",
        help="Held-out text to tune the dynamic-evaluation and cache settings on before using them on --file "
        "(default: the run's validation_file, or the share of its train_file it held out, from run_info.json); "
        "every trial is reported.",
    )
    parser.add_argument("--tune_tokens", type=int, default=10000, help="Tokens of the tuning text used by the search.")
    parser.add_argument(
        "--stats_file", help="Training text for dynamic evaluation's RMS gradients (default: the run's train_file)."
    )
    parser.add_argument("--stats_tokens", type=int, default=100000, help="Tokens of --stats_file used.")
    parser.add_argument(
        "--dynamic_lr",
        type=float,
        help="Dynamic evaluation's step size eta (default: tuned over 1e-5 .. 1e-2 and off; given: kept).",
    )
    parser.add_argument(
        "--dynamic_decay",
        type=float,
        help="Decay lambda toward the trained weights (default: tuned over 0, 0.002, 0.02, 0.1; given: kept).",
    )
    parser.add_argument("--dynamic_bptt", type=int, default=5, help="Tokens per dynamic-evaluation update.")
    parser.add_argument("--cache_size", type=int, default=500, help="Neural cache: previous positions kept.")
    parser.add_argument(
        "--cache_theta", type=float, help="Neural cache: flatness of its softmax (default: tuned; given: kept)."
    )
    parser.add_argument(
        "--cache_lambda",
        type=float,
        help="Neural cache: its weight in the mixture (default: tuned, 0 = off among the candidates; given: kept).",
    )
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    if args.no_eos:
        args.add_eos = False
    metrics = evaluate_file(args)
    for line in _evaluation_summary(metrics):
        print(line, file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def evaluate_file(args: argparse.Namespace) -> dict:
    """`rnn-lm evaluate`: the static metrics, then the adaptive ones (dynamic evaluation, neural cache).

    A setting given as a flag (`--dynamic_lr`, `--dynamic_decay`, `--cache_theta`, `--cache_lambda`) is kept as
    given; the others are tuned on held-out text: `--tune_file`, else the run's validation text
    (`evaluation.run_validation_stream`), over grids that include "off". With no such text, a method with some
    settings given takes the defaults for the rest (a note says so), and one with none given is refused: its default
    step size can make perplexity worse than the static model's. A method tuned "off" reports the static perplexity
    with a note; an adaptive perplexity above the static one on `--file` comes with a warning.
    """
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rnn_lm_hf import evaluation

    options = evaluation.TextOptions.of_run(args.model)
    for key in ("add_eos", "keep_linebreaks"):
        if getattr(args, key) is not None:
            setattr(options, key, getattr(args, key))
    static = evaluate_perplexity(  # bptt None: the run's block_size
        args.model, args.file, args.bptt, args.batch_size, not args.per_block, options, args.trust_remote_code
    )
    metrics = {"perplexity": static["eval_perplexity"], "loss": static["eval_loss"], "tokens": static["eval_tokens"]}
    given = {}  # method -> the settings given as flags
    if args.neural_cache:
        given["neural_cache"] = _given(theta=args.cache_theta, lambdah=args.cache_lambda)
    if args.dynamic_eval:
        given["dynamic_eval"] = _given(lr=args.dynamic_lr, decay=args.dynamic_decay)
    if not given:
        return metrics
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    tokens = evaluation.load_stream(args.file, tokenizer, options)
    defaults = {"neural_cache": evaluation.CACHE_DEFAULTS, "dynamic_eval": evaluation.DYNAMIC_DEFAULTS}
    to_tune = [method for method, fixed in given.items() if len(fixed) < len(defaults[method])]
    notes, warnings = [], []
    tune = _tuning_text(args, tokenizer, options, to_tune, given, notes) if to_tune else None
    rms = None
    if args.dynamic_eval:
        stats_option = (
            "--stats_file" if args.stats_file else "the run's train_file (run_info.json; else pass --stats_file)"
        )
        stats_file = args.stats_file or evaluation.run_arguments(args.model).get("train_file")
        if stats_file is None:
            raise ValueError(
                "--dynamic_eval needs training text for its gradient statistics: pass --stats_file (the model's "
                "training file); this folder's run_info.json names none."
            )
        stats = evaluation.load_stream(stats_file, tokenizer, options, option=stats_option)[: args.stats_tokens + 1]
        rms = evaluation.gradient_statistics(model, stats)
    settings = {method: {**defaults[method], **fixed} for method, fixed in given.items()}
    if tune is not None:
        started = time.time()
        text, tune_tokens = tune[0], tune[1][: args.tune_tokens + 1]
        log_probs, states, targets = evaluation.score_stream(model, tune_tokens)
        static_nll = -float(log_probs.sum())
        tuning = {"text": text, "tokens": len(targets)}
        tuning["static_perplexity"] = evaluation.perplexity_of(static_nll, len(targets))
        if "neural_cache" in to_tune:
            settings["neural_cache"], tuning["neural_cache"] = evaluation.tune_neural_cache(
                log_probs, states, targets, args.cache_size, given["neural_cache"]
            )
        if "dynamic_eval" in to_tune:
            settings["dynamic_eval"], tuning["dynamic_eval"] = evaluation.tune_dynamic_eval(
                model, tune_tokens, rms, static_nll, given["dynamic_eval"], args.dynamic_bptt
            )
        tuning["seconds"] = round(time.time() - started, 1)
        metrics["tuning"] = tuning
    static_perplexity = metrics["perplexity"]
    for method, setting in settings.items():
        if setting == evaluation.OFF:
            metrics[f"{method}_perplexity"] = static_perplexity
            notes.append(
                f"{method} is off: no setting beat the static model on {metrics['tuning']['text']}, so "
                f"{method}_perplexity is the static perplexity"
            )
            continue
        extra = {"cache_size": args.cache_size} if method == "neural_cache" else {"bptt": args.dynamic_bptt}
        settings[method] = setting = {**extra, **setting}
        metrics.update(evaluation.adaptive_perplexities(model, tokens, rms=rms, **{method: setting}))
        if metrics[f"{method}_perplexity"] > static_perplexity:
            warnings.append(
                f"{method}_perplexity {metrics[f'{method}_perplexity']:.4f} is ABOVE the static perplexity "
                f"{static_perplexity:.4f} on {args.file}: with {_setting_text(setting)} adapting makes this text "
                "worse; report the static number, or tune on text like this one (--tune_file)"
            )
    metrics["settings"] = settings
    if notes:
        metrics["notes"] = notes
    if warnings:
        metrics["warnings"] = warnings
    return metrics


def _given(**settings) -> dict:
    """The settings given as flags (not None)."""
    return {key: value for key, value in settings.items() if value is not None}


def _setting_text(setting: dict | str) -> str:
    return setting if isinstance(setting, str) else " ".join(f"{key}={value:g}" for key, value in setting.items())


def _tuning_text(args, tokenizer, options, to_tune: list[str], given: dict, notes: list[str]):
    """(description, token stream) of the text to tune the adaptive settings on: `--tune_file`, else the run's own
    validation text; None when there is none and every method to tune has some settings given (a note says the rest
    take the defaults). Raises a one-line `ValueError` when a method has nothing given and nothing to tune on."""
    from rnn_lm_hf import evaluation

    if args.tune_file:
        return f"--tune_file {args.tune_file}", evaluation.load_stream(
            args.tune_file, tokenizer, options, option="--tune_file"
        )
    found = evaluation.run_validation_stream(args.model, tokenizer, options)
    if found is not None:
        return found
    validation_file = evaluation.run_arguments(args.model).get("validation_file")
    why = (
        f"the run's validation_file {validation_file!r} (run_info.json) is not found from {Path.cwd()}"
        if validation_file
        else f"{args.model} names no validation text (run_info.json)"
    )
    flags = {"neural_cache": "--cache_theta and --cache_lambda", "dynamic_eval": "--dynamic_lr and --dynamic_decay"}
    for method in to_tune:
        if not given[method]:
            raise ValueError(
                f"--{method}: its settings must be tuned on held-out text (defaults can make perplexity worse than "
                f"the static model's), and {why}: pass --tune_file VALIDATION_FILE, or set {flags[method]}"
            )
        defaults = {"neural_cache": evaluation.CACHE_DEFAULTS, "dynamic_eval": evaluation.DYNAMIC_DEFAULTS}[method]
        rest = {key: value for key, value in defaults.items() if key not in given[method]}
        notes.append(
            f"{method}: nothing to tune on ({why}): the settings not given are defaults, {_setting_text(rest)}"
        )
    return None


def _evaluation_summary(metrics: dict) -> list[str]:
    """The lines `rnn-lm evaluate` writes to stderr beside its JSON: the settings used (and where they were tuned),
    then any notes and warnings."""
    lines = []
    if "settings" in metrics:
        used = "; ".join(f"{method} {_setting_text(setting)}" for method, setting in metrics["settings"].items())
        tuning = metrics.get("tuning")
        where = (
            f" (tuned on {tuning['text']}: {tuning['tokens']} tokens, static perplexity "
            f"{tuning['static_perplexity']:.4f}, {tuning['seconds']} s)"
            if tuning
            else ""
        )
        lines.append(f"settings{where}: {used}")
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    lines += [f"warning: {warning}" for warning in metrics.get("warnings", [])]
    return lines


def evaluate_perplexity(
    model_path: str,
    file: str,
    bptt: int | None = None,
    batch_size: int = 1,
    stateful: bool = True,
    options=None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Token-weighted perplexity through the same evaluation loop training uses; the text is prepared with
    `options` (`evaluation.TextOptions`), by default as the run recorded in `run_info.json`, and cut into segments
    of `bptt` tokens, by default the run's `block_size` (else 35): one stream then gives the run's own number."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from rnn_lm_hf.data import eval_stream_segments, group_into_blocks
    from rnn_lm_hf.evaluation import TextOptions, load_stream, run_arguments
    from rnn_lm_hf.hub import check_causal_lm
    from rnn_lm_hf.trainer import RNNLMTrainer

    check_causal_lm(model_path, "rnn-lm evaluate", trust_remote_code)
    bptt = bptt or run_arguments(model_path).get("block_size") or 35
    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    stream = load_stream(file, tokenizer, options or TextOptions.of_run(model_path))
    if stateful:
        bptt = max(1, min(bptt, len(stream) - 1))  # a file shorter than a segment is one segment: the same number
        dataset = eval_stream_segments(stream, bptt, 1, batch_size, tokenizer.pad_token_id, name=file)
    else:
        dataset = group_into_blocks(stream, bptt, tokenizer.pad_token_id, name=file)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            remove_unused_columns=False,
            disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = RNNLMTrainer(model=model, args=args, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # stdout carries the JSON result only
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

    from rnn_lm_hf.hub import check_causal_lm

    # A classifier folder, or one without its tokenizer, would otherwise end in tracebacks from inside the pipeline.
    check_causal_lm(args.model, "rnn-lm generate", trust_remote_code=args.trust_remote_code)
    set_seed(args.seed)
    generator = pipeline("text-generation", model=args.model, trust_remote_code=args.trust_remote_code)
    options = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.do_sample,
        "num_beams": args.num_beams,
        "num_return_sequences": args.num_return_sequences,
        "clean_up_tokenization_spaces": False,  # the text as the tokenizer decodes it, on every transformers release
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


def tokenizer_command(argv: list[str]) -> int:
    from rnn_lm_hf.tokenization import main as tokenizer_main

    return tokenizer_main(argv)


# The Hub commands' flags until 0.1 were spelt with hyphens; accepted, with a warning, for one more release.
DEPRECATED_FLAGS = {"--repo-id": "--repo_id", "--commit-message": "--commit_message"}


def renamed_flags(argv: list[str]) -> list[str]:
    """`argv` with the old hyphenated Hub flags (`--repo-id x`, `--commit-message=y`) renamed, warning once each."""
    renamed = []
    for part in argv:
        flag, sep, value = part.partition("=")
        if flag in DEPRECATED_FLAGS:
            print(f"warning: {flag} is deprecated, use {DEPRECATED_FLAGS[flag]}", file=sys.stderr)
            part = DEPRECATED_FLAGS[flag] + sep + value
        renamed.append(part)
    return renamed


def analyze_command(argv: list[str]) -> int:
    from rnn_lm_hf.analysis import main as analysis_main

    return analysis_main(argv)


def card_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lm card", description="(Re)write README.md of a trained model folder.")
    parser.add_argument("model_dir")
    parser.add_argument("--repo_id", help="Hub id used in the card's loading snippets")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--language", action="append", help="language code of the training text (repeatable)")
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="the training dataset (Hub id or name), for the card's text and metadata: a folder saved by plain "
        "Trainer (no run_info.json) does not record it; it replaces the name in run_info.json",
    )
    args = parser.parse_args(renamed_flags(argv))

    from huggingface_hub import ModelCard

    from rnn_lm_hf.model_card import write_model_card

    path = write_model_card(
        args.model_dir, repo_id=args.repo_id, license=args.license, language=args.language, dataset=args.dataset
    )
    print(f"Wrote {path}")
    if not ModelCard.load(path).data.datasets:
        print("note: the folder does not record its training data, and the card says so; name it with --dataset NAME")
    return 0


def check_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnn-lm check", description="Validate a folder for publishing and list the files `push` would upload."
    )
    parser.add_argument("model_dir")
    args = parser.parse_args(argv)

    from rnn_lm_hf.hub import validate_folder

    print("\n".join(validate_folder(args.model_dir)))
    return 0


def push_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnn-lm push", description="Validate, then upload a folder (token: HF_TOKEN or `hf auth login`)."
    )
    parser.add_argument("model_dir")
    parser.add_argument("repo_id", help="namespace/name")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to commit to (created from main when missing)")
    parser.add_argument("--commit_message")
    args = parser.parse_args(renamed_flags(argv))

    from rnn_lm_hf.hub import PublishError, publish
    from rnn_lm_hf.model_card import CARD_FILE, write_model_card

    folder = Path(args.model_dir)
    if folder.is_dir() and not (folder / CARD_FILE).is_file():  # e.g. a folder saved by plain Trainer
        print(f"Wrote {write_model_card(args.model_dir, repo_id=args.repo_id)}")
    try:
        url = publish(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    except PublishError as error:  # the upload failed, not the input: exit status 1
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Published {args.repo_id}: {url}")
    return 0


COMMANDS = {
    "demo": demo,
    "train": train,
    "train-tagger": train_tagger,
    "train-classifier": train_classifier,
    "evaluate": evaluate_command,
    "generate": generate_command,
    "plot": plot_command,
    "tokenizer": tokenizer_command,
    "analyze": analyze_command,
    "card": card_command,
    "check": check_command,
    "push": push_command,
}


TRAINING_COMMANDS = ("demo", "train", "train-tagger", "train-classifier")


def pop_threads(argv: list[str]) -> tuple[int | None, list[str]]:
    """A leading `--threads N` (or `--threads=N`) and the rest of the command line."""
    if not argv or not argv[0].startswith("--threads"):
        return None, argv
    if "=" in argv[0]:
        value, rest = argv[0].split("=", 1)[1], argv[1:]
    else:
        value, rest = (argv[1] if len(argv) > 1 else ""), argv[2:]
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--threads must be a positive int, got {value!r}")
    return int(value), rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        threads, argv = pop_threads(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if threads is not None and argv and argv[0] in TRAINING_COMMANDS:
        argv = [*argv, "--threads", str(threads)]  # the scripts set it themselves, with the rest of their options
    elif argv and argv[0] in COMMANDS:
        from rnn_lm_hf.training.scaffold import set_threads

        set_threads(threads)
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
