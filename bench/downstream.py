"""Downstream benchmarks of the tagging and classification heads, from scratch and (optionally) from a pretrained LM.

Each benchmark is one training-script run on its config in training/configs/, in a fresh process limited to one
thread (OMP/MKL_NUM_THREADS=1), so CPU timings do not depend on what else runs on the machine's other cores.

    python bench/downstream.py                                  # all four, from scratch
    python bench/downstream.py --only wnut17 sst2               # a subset
    python bench/downstream.py --pretrained_lm runs/lm_wikitext2 --init pretrained   # ULMFiT-style transfer rows

Results are merged into --results (one row per benchmark and initialisation) and printed as a markdown table.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from rnn_lm_hf.training.transfer import ARCHITECTURE_FIELDS  # fixed by a pretrained LM


ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "wnut17": {
        "script": "training/train_token_classification.py",
        "config": "training/configs/wnut17_bilstm.json",
        "metric": "test_f1",
        "label": "WNUT-17 test entity F1",
        "anchor": "40.78 (best shared-task system); Flair pooled 49.59",
    },
    "ud_ewt_upos": {
        "script": "training/train_token_classification.py",
        "config": "training/configs/ud_ewt_upos_bilstm.json",
        "metric": "test_accuracy",
        "label": "UD English EWT test UPOS accuracy",
        "anchor": "about 95 (BiLSTM taggers, rough); 96.94 transformer",
    },
    "sst2": {
        "script": "training/train_sequence_classification.py",
        "config": "training/configs/sst2_bilstm.json",
        "metric": "test_accuracy",
        "label": "SST-2 sentence-level test accuracy",
        "anchor": "LSTM 84.9 / BiLSTM 87.5 (Tai 2015); Kim CNN 88.1",
    },
    "rt_polarity": {
        "script": "training/train_sequence_classification.py",
        "config": "training/configs/rt_polarity_bilstm.json",
        "metric": "cv_accuracy_mean",
        "label": "rt-polarity 10-fold CV accuracy",
        "anchor": "about 81 (Kim CNN)",
    },
}


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def command_for(name: str, init: str, runs_dir: Path, pretrained_lm: str | None, extra: list[str]) -> list[str]:
    spec = BENCHMARKS[name]
    command = ["python", spec["script"], spec["config"], "--output_dir", str(runs_dir / f"{name}-{init}")]
    if init == "pretrained":
        # The LM fixes architecture and tokenizer: keep only the config's non-architecture overrides (dropout, ...).
        overrides = json.loads((ROOT / spec["config"]).read_text()).get("config_overrides", "")
        kept = [item for item in overrides.split(",") if item.split("=")[0].strip() not in ARCHITECTURE_FIELDS]
        command += ["--model_name_or_path", pretrained_lm, "--config_overrides", ",".join(kept)]
        command += ["--layerwise_lr_decay", "2.6", "--gradual_unfreezing", "true"]
    return command + extra


def run(name: str, init: str, args: argparse.Namespace) -> dict:
    command = command_for(name, init, Path(args.runs_dir), args.pretrained_lm, args.extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} ({init}) failed with exit code {result.returncode}")
    run_info = json.loads((ROOT / command[command.index("--output_dir") + 1] / "run_info.json").read_text())
    metrics = run_info["metrics"]
    spec = BENCHMARKS[name]
    return {
        "benchmark": name,
        "init": init,
        "label": spec["label"],
        "metric": spec["metric"],
        "value": metrics[spec["metric"]],
        "std": metrics.get("cv_accuracy_std"),
        "anchor": spec["anchor"],
        "wall_s": round(wall_s, 1),
        "command": "OMP_NUM_THREADS=1 " + shlex.join(command),
        "pretrained_lm": args.pretrained_lm if init == "pretrained" else None,
        "device": f"CPU, 1 thread: {cpu_model()}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.date.today().isoformat(),
        "metrics": metrics,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| benchmark | init | ours | anchor | wall time (1 CPU thread) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        value = f"{100 * row['value']:.2f}" + (f" ± {100 * row['std']:.2f}" if row.get("std") is not None else "")
        lines.append(f"| {row['label']} | {row['init']} | {value} | {row['anchor']} | {row['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--init", nargs="+", choices=["scratch", "pretrained"], default=None)
    parser.add_argument("--pretrained_lm", help="Causal-LM folder (train_clm.py on WikiText-2) for the transfer rows.")
    parser.add_argument("--runs_dir", default="runs/bench_downstream")
    parser.add_argument("--results", default="bench/results/downstream_cpu.json")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="After --: flags passed to every training script.")
    args = parser.parse_args(argv)
    args.extra = [flag for flag in args.extra if flag != "--"]
    inits = args.init or (["scratch", "pretrained"] if args.pretrained_lm else ["scratch"])
    if "pretrained" in inits and not args.pretrained_lm:
        parser.error("--init pretrained needs --pretrained_lm PATH")

    results_path = ROOT / args.results
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    for name in args.only:
        for init in inits:
            row = run(name, init, args)
            rows = [r for r in rows if (r["benchmark"], r["init"]) != (name, init)] + [row]
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(rows, indent=2) + "\n")  # after every run: a crash keeps the rest
    print("\n" + markdown_table(rows))


if __name__ == "__main__":
    main()
