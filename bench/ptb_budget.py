"""PTB perplexity within a training-time budget on one CPU thread: our AWD-style recipe beside a bare PyTorch peer.

Both run at the same time, one thread each (`OMP_NUM_THREADS=1`, so the two cores are not oversubscribed):
- ours: `training/configs/ptb_awd_budget_cpu.json` (locked/embedding/weight dropout, AR/TAR, variable BPTT, NT-ASGD);
- the peer: `bench/peer_word_language_model.py`, pytorch/examples word_language_model (2x200 tied LSTM, dropout 0.2,
  SGD lr 20 divided by 4 on a stalled validation, clip 0.25, bptt 35, batch 20).
Then our model is scored on the test set alone (2 threads): static stream perplexity (batch 1, exact), and with the
neural cache and dynamic evaluation tuned on the validation set. Writes `--results` (JSON) and a PNG of validation
perplexity against training wall time.

    python bench/ptb_budget.py                      # 60 minutes, ../shared/data/ptb, bench/results/ptb_budget_cpu.json
    python bench/ptb_budget.py --minutes 0.2 --smoke 300 --results /tmp/smoke.json   # a dry run
"""

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "training" / "configs" / "ptb_awd_budget_cpu.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Training budget of each run (wall minutes).")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--out_dir", default=str(ROOT / "runs" / "ptb_budget"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "ptb_budget_cpu.json"))
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--smoke", type=int, default=0, help="Use only the first N lines of each split (a dry run).")
    parser.add_argument("--eval_threads", type=int, default=2, help="Threads for the final evaluation (run alone).")
    return parser.parse_args(argv)


def split_files(args) -> dict[str, Path]:
    files = {split: Path(args.data_dir) / f"ptb.{split}.txt" for split in ("train", "valid", "test")}
    if not args.smoke:
        return files
    small = Path(args.out_dir) / "data"
    small.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        lines = path.read_text().splitlines(keepends=True)[: args.smoke]
        (small / path.name).write_text("".join(lines))
    return {split: small / f"ptb.{split}.txt" for split in files}


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def launch(args, files) -> dict[str, subprocess.Popen]:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    minutes = str(args.minutes)
    ours = [
        sys.executable, str(ROOT / "training" / "train_clm.py"), args.recipe,
        "--output_dir", str(out / "ours"), "--max_train_minutes", minutes, "--threads", "1",
        "--train_file", str(files["train"]), "--validation_file", str(files["valid"]),
        "--test_file", str(files["test"]),
    ]  # fmt: skip
    if args.smoke:  # the recipe's evaluation interval is longer than a whole tiny epoch
        ours += ["--eval_steps", "5", "--save_steps", "5", "--logging_steps", "5"]
    peer = [
        sys.executable, str(ROOT / "bench" / "peer_word_language_model.py"), "--threads", "1",
        "--max_minutes", minutes, "--epochs", "1000", "--data", str(files["train"].parent),
        "--save", str(out / "peer.pt"), "--out", str(out / "peer.json"),
    ]  # fmt: skip
    runs = {}
    for name, command in (("ours", ours), ("peer", peer)):
        log = (out / f"{name}.log").open("w")
        runs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=one_thread_env(), cwd=ROOT)
    return runs


def our_curve(run_dir: Path) -> list[dict]:
    """Validation perplexity against training wall time from `training_log.csv` (each log call ends with an
    `elapsed_s` row)."""
    curve, pending = [], None
    with (run_dir / "training_log.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["name"] == "eval_perplexity":
                pending = {
                    "step": int(row["step"]),
                    "epoch": float(row["epoch"]),
                    "valid_perplexity": float(row["value"]),
                }
            elif row["name"] == "elapsed_s" and pending is not None:
                curve.append({**pending, "wall_s": float(row["value"])})
                pending = None
    return curve


def evaluate_ours(args, files) -> dict:
    run_dir = Path(args.out_dir) / "ours"
    command = [
        sys.executable, "-m", "rnn_lm_hf.cli", "--threads", str(args.eval_threads), "evaluate", str(run_dir),
        "--file", str(files["test"]), "--dynamic_eval", "--neural_cache", "--tune_file", str(files["valid"]),
        "--stats_file", str(files["train"]),
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"evaluation failed:\n{result.stderr[-3000:]}")
    metrics = json.loads(result.stdout)
    metrics["wall_s"] = round(time.monotonic() - started, 1)
    return metrics


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, points in curves.items():
        axis.plot([p["wall_s"] / 60 for p in points], [p["valid_perplexity"] for p in points], marker="o", label=name)
    axis.set(xlabel="training wall time (minutes, one thread)", ylabel="PTB validation perplexity", yscale="log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    files = split_files(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = launch(args, files)
    load = []
    while any(run.poll() is None for run in runs.values()):
        load.append(round(os.getloadavg()[0], 2))
        time.sleep(2 if args.smoke else 30)
    for name, run in runs.items():
        if run.returncode != 0:
            log = (Path(args.out_dir) / f"{name}.log").read_text()[-3000:]
            raise SystemExit(f"{name} failed (exit {run.returncode}):\n{log}")
    out = Path(args.out_dir)
    peer = json.loads((out / "peer.json").read_text())
    ours_run = json.loads((out / "ours" / "run_info.json").read_text())
    ours_eval = evaluate_ours(args, files)
    static = ours_eval["perplexity"]
    curves = {
        "ours (AWD-style recipe)": our_curve(out / "ours"),
        "peer (word_language_model 2x200)": [
            {"wall_s": p["wall_s"], "valid_perplexity": p["valid_perplexity"]} for p in peer["curve"]
        ],
    }
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    png = results_path.with_suffix(".png")
    plot(curves, png)
    import torch
    import transformers

    results = {
        "benchmark": "PTB word level, best test perplexity within a training wall-time budget, one CPU thread each",
        "date": started.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average_during_training": {"min": min(load), "max": max(load), "mean": sum(load) / len(load)},
        },
        "budget_minutes": args.minutes,
        "smoke_lines": args.smoke or None,
        "ours": {
            "recipe": str(Path(args.recipe).relative_to(ROOT))
            if Path(args.recipe).is_relative_to(ROOT)
            else args.recipe,
            "command": ours_run["command"],
            "train_wall_s": ours_run["metrics"].get("train_runtime"),
            "epochs": ours_run["metrics"].get("epoch"),
            "valid_perplexity": ours_run["metrics"].get("eval_perplexity"),
            "test_perplexity": static,
            "neural_cache_perplexity": ours_eval.get("neural_cache_perplexity"),
            "dynamic_eval_perplexity": ours_eval.get("dynamic_eval_perplexity"),
            "neural_cache_gain": ours_eval["neural_cache_perplexity"] / static - 1,
            "dynamic_eval_gain": ours_eval["dynamic_eval_perplexity"] / static - 1,
            "adaptive_settings": ours_eval.get("settings"),
            "evaluation_wall_s": ours_eval["wall_s"],
            "curve": curves["ours (AWD-style recipe)"],
        },
        "peer": {
            "recipe": "pytorch/examples word_language_model: 2x200 tied LSTM, dropout 0.2, SGD lr 20 /4 on plateau, "
            "clip 0.25, bptt 35, batch 20 (bench/peer_word_language_model.py)",
            "valid_perplexity": peer["best_valid_perplexity"],
            "test_perplexity": peer["test_perplexity"],
            "epochs": peer["epochs_completed"],
            "train_wall_s": peer["train_wall_s"],
            "curve": curves["peer (word_language_model 2x200)"],
        },
        "ours_beats_peer_static": static < peer["test_perplexity"],
        "plot": png.name,
    }
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("budget_minutes", "ours_beats_peer_static")}, indent=2))
    print(f"ours: test {static:.2f}, cache {results['ours']['neural_cache_perplexity']:.2f}, dynamic "
          f"{results['ours']['dynamic_eval_perplexity']:.2f}; peer: test {peer['test_perplexity']:.2f}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
