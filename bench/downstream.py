"""Downstream benchmarks of the tagging and classification heads: from scratch, and initialised from a causal LM.

Each benchmark is one training-script run on its config in training/configs/, in its own process (one CPU thread
each, OMP/MKL_NUM_THREADS=1, so timings do not depend on what else runs), logged to <runs_dir>/<name>-<init>.log.
Initialisations (--init):

    scratch      the config as it is: a BiLSTM with its own tokenizer trained on the task's data
    scratch-lm   the LM's architecture and tokenizer, random weights: the control for the two below
    pretrained   --model_name_or_path LM: its embeddings and recurrent layers, a new head, plain fine-tuning
    ulmfit       the same plus ULMFiT's discriminative learning rates (2.6) and gradual unfreezing
    adapted      pretrained, after ULMFiT's target-task LM fine-tuning: the LM first trains on the run's (each
                 fold's) training texts for --adaptation_epochs, then the head starts from it

With --task_vocabulary (a word-level LM), every LM-based init reads the task's own word vocabulary, as `scratch`
does; the words the LM knows start from its embedding rows (ULMFiT's vocabulary mapping).

The LM-based inits share the per-benchmark `lm_flags` (a unidirectional encoder tags a word at its last
sub-token; classifiers use ULMFiT's concat pooling), so they differ only in the initialisation and the tricks.

    python bench/downstream.py                                    # all four, from scratch, CPU
    python bench/downstream.py --only wnut17 sst2                 # a subset
    python bench/downstream.py --pretrained_lm runs/lm_wikitext2 --init scratch-lm pretrained ulmfit
    python bench/downstream.py --device cuda --jobs 12 ...        # runs share one GPU, 12 at a time
    python bench/downstream.py --only wnut17 ud_ewt_upos --overrides use_crf=true --variant crf   # a CRF on top
    python bench/downstream.py --pretrained_lm runs/bilm_wikitext2 --variant bilm --init scratch-lm pretrained

`--overrides` adds config fields to every run (ELMo's layer mix), `--tagger_overrides` to the two taggers only (a
CRF); `--variant` names such rows (and an LM other than the default one), so they sit beside the plain ones. Results
are merged into --results (one row per benchmark, initialisation and variant) and printed as a markdown table.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from rnn_lm_hf import RNNLMConfig
from rnn_lm_hf.training.train_sequence_classification import cv_summary


ROOT = Path(__file__).resolve().parents[1]
INITS = ("scratch", "scratch-lm", "pretrained", "ulmfit", "adapted")
BENCHMARKS = {
    "wnut17": {
        "script": "training/train_token_classification.py",
        "config": "training/configs/wnut17_bilstm.json",
        "metric": "test_f1",
        "label": "WNUT-17 test entity F1",
        "anchor": "40.78 (best shared-task system); Flair pooled 49.59",
        "lm_flags": ["--label_sub_token", "last", "--learning_rate", "1e-3", "--num_train_epochs", "10"],
    },
    "ud_ewt_upos": {
        "script": "training/train_token_classification.py",
        "config": "training/configs/ud_ewt_upos_bilstm.json",
        "metric": "test_accuracy",
        "label": "UD English EWT test UPOS accuracy",
        "anchor": "about 95 (BiLSTM taggers, rough); 96.94 transformer",
        "lm_flags": ["--label_sub_token", "last", "--learning_rate", "1e-3", "--num_train_epochs", "6"],
    },
    "sst2": {
        "script": "training/train_sequence_classification.py",
        "config": "training/configs/sst2_bilstm.json",
        "metric": "test_accuracy",
        "label": "SST-2 sentence-level test accuracy",
        "anchor": "LSTM 84.9 / BiLSTM 87.5 (Tai 2015); Kim CNN 88.1",
        "lm_overrides": "classifier_pooling=concat",
        "lm_flags": ["--learning_rate", "1e-3", "--num_train_epochs", "6"],
    },
    "rt_polarity": {
        "script": "training/train_sequence_classification.py",
        "config": "training/configs/rt_polarity_bilstm.json",
        "metric": "cv_accuracy_mean",
        "label": "rt-polarity 10-fold CV accuracy",
        "anchor": "about 81 (Kim CNN)",
        "lm_overrides": "classifier_pooling=concat",
        "lm_flags": ["--learning_rate", "1e-3", "--num_train_epochs", "4", "--per_device_train_batch_size", "64"],
    },
}


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def benchmark_config(name: str) -> dict:
    """The benchmark's training config (its JSON file in training/configs/)."""
    return json.loads((ROOT / BENCHMARKS[name]["config"]).read_text())


def cv_folds(name: str) -> int:
    """The benchmark's number of cross-validation folds (0: it has a test set)."""
    return benchmark_config(name).get("cv_folds") or 0


def shards_of(name: str, args: argparse.Namespace) -> list[int | None]:
    """A cross-validated benchmark runs as --cv_shards processes (fold i in shard i mod N); others as one."""
    return list(range(args.cv_shards)) if cv_folds(name) and args.cv_shards > 1 else [None]


def command_for(name: str, init: str, args: argparse.Namespace, shard: int | None = None) -> list[str]:
    spec, config = BENCHMARKS[name], benchmark_config(name)
    shard_name = None if shard is None else f"shard{shard}"
    output_dir = Path(args.runs_dir) / "-".join(filter(None, (name, init, args.variant, shard_name)))
    command = ["python", spec["script"], spec["config"], "--output_dir", str(output_dir)]
    if shard is not None:
        command += ["--cv_fold_indices", *map(str, range(shard, config["cv_folds"], args.cv_shards))]
    if args.device == "cuda":
        command += ["--use_cpu", "false"]
    overrides = config.get("config_overrides", "")
    added = ",".join(filter(None, (args.overrides, args.tagger_overrides if "token" in spec["script"] else "")))
    if init == "scratch":
        if added:
            command += ["--config_overrides", ",".join(filter(None, (overrides, added)))]
        return command + args.extra
    # The LM fixes architecture, tokenizer and dropout (its features were learnt with it); keep the config's other
    # overrides (pooling, ...) and add lm_overrides. scratch-lm gets exactly the same, only its weights are random.
    fixed = (*RNNLMConfig.architecture_fields, "dropout")
    kept = {key: value for key, value in RNNLMConfig.parse_overrides(overrides).items() if key not in fixed}
    kept.update(RNNLMConfig.parse_overrides(spec.get("lm_overrides")))
    kept.update(RNNLMConfig.parse_overrides(added))
    lm = args.pretrained_lm
    # Always passed, even empty: it replaces the config file's overrides, which set the BiLSTM's architecture.
    command += ["--config_overrides", ",".join(f"{key}={value}" for key, value in kept.items()), *spec["lm_flags"]]
    if init == "scratch-lm":
        command += ["--config_name", lm, "--tokenizer_name", lm]
    else:
        command += ["--model_name_or_path", lm]
    if init == "ulmfit":
        command += ["--layerwise_lr_decay", "2.6", "--gradual_unfreezing", "true"]
    if init == "adapted":
        command += ["--lm_adaptation_epochs", str(args.adaptation_epochs)]
    if args.task_vocabulary:
        command += ["--task_vocabulary", "true"]
    return command + args.extra


def device_name(args: argparse.Namespace) -> str:
    if args.device == "cuda":
        return f"GPU: {torch.cuda.get_device_name()} ({args.jobs} runs sharing it, 1 CPU thread each)"
    return f"CPU, 1 thread: {cpu_model()}"


def run(name: str, init: str, args: argparse.Namespace, deadline: float, shard: int | None = None) -> dict | None:
    """One benchmark run (or shard of its folds) in its own process; its row, or None if it failed or ran past the
    deadline."""
    command = command_for(name, init, args, shard)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log_path = Path(command[command.index("--output_dir") + 1] + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[start] {name} ({init}): {shlex.join(command)}  > {log_path}", flush=True)
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a deadline stops its children too
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            print(f"[deadline] {name} ({init}) stopped after {time.perf_counter() - start:.0f} s", flush=True)
            return None
    wall_s = time.perf_counter() - start
    if returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        print(f"[failed] {name} ({init}), exit code {returncode}:\n  " + "\n  ".join(tail), flush=True)
        return None
    run_info = json.loads((ROOT / command[command.index("--output_dir") + 1] / "run_info.json").read_text())
    metrics = run_info["metrics"]
    spec = BENCHMARKS[name]
    print(f"[done] {name} ({init}): {spec['metric']} {metrics[spec['metric']]:.4f} in {wall_s:.0f} s", flush=True)
    return {
        "benchmark": name,
        "init": init,
        "variant": args.variant,
        "label": spec["label"],
        "metric": spec["metric"],
        "value": metrics[spec["metric"]],
        "std": metrics.get("cv_accuracy_std"),
        "dev": metrics.get("eval_" + spec["metric"].removeprefix("test_")) if "test_" in spec["metric"] else None,
        "anchor": spec["anchor"],
        "wall_s": round(wall_s, 1),
        "command": "OMP_NUM_THREADS=1 " + shlex.join(command),
        "pretrained_lm": args.pretrained_lm if init != "scratch" else None,
        "device": device_name(args),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.date.today().isoformat(),
        "metrics": metrics,
    }


def merge_shards(rows: list[dict]) -> dict:
    """One row from the rows of a benchmark's fold shards: every fold's scores, mean and std over all of them, the
    shards' commands, and the wall time of the slowest (they run side by side)."""
    metrics = {key: value for row in rows for key, value in row["metrics"].items() if key.startswith("fold_")}
    names = sorted({key.split("_test_", 1)[1] for key in metrics})
    for metric in names:  # the same mean and std as one run over all the folds
        values = [value for key, value in metrics.items() if key.endswith(f"_test_{metric}")]
        metrics.update(cv_summary(values, f"cv_{metric}"))
    metric = rows[0]["metric"]
    return {
        **rows[0],
        "value": metrics[metric],
        "std": metrics[metric.replace("_mean", "_std")],
        "wall_s": max(row["wall_s"] for row in rows),
        "command": " & ".join(row["command"] for row in rows),
        "metrics": metrics,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| benchmark | init | variant | test | dev | anchor | wall |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        value = f"{100 * row['value']:.2f}" + (f" ± {100 * row['std']:.2f}" if row.get("std") is not None else "")
        dev = f"{100 * row['dev']:.2f}" if row.get("dev") is not None else ""
        lines.append(
            f"| {row['label']} | {row['init']} | {row.get('variant') or ''} | {value} | {dev} | {row['anchor']} "
            f"| {row['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--init", nargs="+", choices=INITS, default=None)
    parser.add_argument(
        "--pretrained_lm", help="Causal-LM folder (train_clm.py on WikiText-2) for the LM-based inits."
    )
    parser.add_argument("--overrides", default="", help="Config fields added to every run, e.g. layer_mix=true.")
    parser.add_argument(
        "--tagger_overrides", default="", help="Config fields added to the taggers' runs: use_crf=true."
    )
    parser.add_argument("--variant", default="", help="Name of these rows (an LM, overrides), kept apart from others.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time (on cuda they share the one GPU).")
    parser.add_argument(
        "--adaptation_epochs", type=float, default=3, help="--init adapted: epochs of LM fine-tuning on the task text."
    )
    parser.add_argument(
        "--task_vocabulary",
        action="store_true",
        help="LM-based inits: the task's own word vocabulary, mapped onto a word-level LM's (ULMFiT); the control too.",
    )
    parser.add_argument(
        "--cv_shards",
        type=int,
        default=1,
        help="Spread a cross-validated benchmark's folds over N runs (with --jobs).",
    )
    parser.add_argument("--deadline_minutes", type=float, default=None, help="Stop runs still going after this.")
    parser.add_argument("--runs_dir", default="runs/bench_downstream")
    parser.add_argument("--results", default=None, help="JSON rows (default bench/results/downstream_<device>.json)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="After --: flags passed to every training script.")
    args = parser.parse_args(argv)
    args.extra = [flag for flag in args.extra if flag != "--"]
    inits = args.init or (list(INITS) if args.pretrained_lm else ["scratch"])
    if any(init != "scratch" for init in inits) and not args.pretrained_lm:
        parser.error("--init scratch-lm/pretrained/ulmfit need --pretrained_lm PATH")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    deadline = time.monotonic() + 60 * (args.deadline_minutes or 1e9)

    results_path = ROOT / (args.results or f"bench/results/downstream_{args.device}.json")
    runs = [(name, init, shard) for name in args.only for init in inits for shard in shards_of(name, args)]
    failed, shard_rows = [], {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run, name, init, args, deadline, shard): (name, init, shard) for name, init, shard in runs
        }
        for future in concurrent.futures.as_completed(futures):
            name, init, shard = futures[future]
            row = future.result()
            if row is None:
                failed.append(f"{name} ({init}{'' if shard is None else f', shard {shard}'})")
                continue
            if shard is not None:  # a row once every shard of the benchmark is in
                done = shard_rows.setdefault((name, init), [])
                done.append(row)
                if len(done) < args.cv_shards:
                    continue
                row = merge_shards(done)
            key = (name, init, args.variant)
            # Read again before each merge: another downstream.py may have added its rows to the same file.
            rows = json.loads(results_path.read_text()) if results_path.is_file() else []
            rows = [r for r in rows if (r["benchmark"], r["init"], r.get("variant", "")) != key] + [row]
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(rows, indent=2) + "\n")  # after every run: a crash keeps the rest
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    print("\n" + markdown_table(rows))
    if failed:
        raise SystemExit(f"not finished: {', '.join(failed)} (see their logs in {args.runs_dir})")


if __name__ == "__main__":
    main()
