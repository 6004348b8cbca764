"""PTB perplexity within a training-time budget on one CPU thread: our AWD-style recipe beside a bare PyTorch peer.

Both run at the same time, one thread each (`OMP_NUM_THREADS=1`, so the two cores are not oversubscribed):
- ours: `training/configs/ptb_awd_budget_cpu.json` (locked/embedding/weight dropout, AR/TAR, variable BPTT, NT-ASGD);
- the peer: `bench/peer_word_language_model.py`, pytorch/examples word_language_model (2x200 tied LSTM, dropout 0.2,
  SGD lr 20 divided by 4 on a stalled validation, clip 0.25, bptt 35, batch 20).
Then our model is scored on the test set alone (2 threads): static stream perplexity (batch 1, exact), and with the
neural cache and dynamic evaluation tuned on the validation set. Writes `--results` (JSON) and a PNG of validation
perplexity against training wall time.

With `--beside RECIPE`, a second recipe of ours runs in the peer's place (e.g. another cell type), and both are
scored on the test set the same way (`--static_only`: the static perplexity alone, minutes instead of a quarter hour).

    python bench/ptb_budget.py                      # 60 minutes, ../shared/data/ptb, bench/results/ptb_budget_cpu.json
    python bench/ptb_budget.py --beside training/configs/ptb_mingru_budget_cpu.json --static_only \
        --results bench/results/ptb_budget_cells_cpu.json   # the LSTM recipe beside the minGRU one
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

from rnn_lm_hf.configuration_rnn_lm import RNNLMConfig


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "training" / "configs" / "ptb_awd_budget_cpu.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Training budget of each run (wall minutes).")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--out_dir", default=str(ROOT / "runs" / "ptb_budget"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "ptb_budget_cpu.json"))
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--beside", default=None, help="A second recipe of ours, run in the peer's place.")
    parser.add_argument("--static_only", action="store_true", help="Score the static test perplexity only.")
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


def our_command(args, files, recipe: str, run_dir: Path) -> list[str]:
    command = [
        sys.executable, str(ROOT / "training" / "train_clm.py"), recipe,
        "--output_dir", str(run_dir), "--max_train_minutes", str(args.minutes), "--threads", "1",
        "--train_file", str(files["train"]), "--validation_file", str(files["valid"]),
        "--test_file", str(files["test"]),
    ]  # fmt: skip
    if args.smoke:  # the recipe's evaluation interval is longer than a whole tiny epoch
        command += ["--eval_steps", "5", "--save_steps", "5", "--logging_steps", "5"]
        # A few hundred lines hold ~1,600 word types: an adaptive softmax's PTB cutoffs would lie outside them.
        overrides = json.loads(Path(recipe).read_text()).get("config_overrides")
        if "softmax_cutoffs" in RNNLMConfig.parse_overrides(overrides):
            overrides = RNNLMConfig.merge_overrides(overrides, {"softmax_cutoffs": "200/500"})
            command += ["--config_overrides", overrides]
    return command


def launch(args, files) -> dict[str, subprocess.Popen]:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    commands = {"ours": our_command(args, files, args.recipe, out / "ours")}
    if args.beside:
        commands["beside"] = our_command(args, files, args.beside, out / "beside")
    else:
        commands["peer"] = [
            sys.executable, str(ROOT / "bench" / "peer_word_language_model.py"), "--threads", "1",
            "--max_minutes", str(args.minutes), "--epochs", "1000", "--data", str(files["train"].parent),
            "--save", str(out / "peer.pt"), "--out", str(out / "peer.json"),
        ]  # fmt: skip
    runs = {}
    for name, command in commands.items():
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


def evaluate_ours(args, files, run_dir: Path) -> dict:
    command = [
        sys.executable, "-m", "rnn_lm_hf.cli", "--threads", str(args.eval_threads), "evaluate", str(run_dir),
        "--file", str(files["test"]),
    ]  # fmt: skip
    if not args.static_only:
        command += ["--dynamic_eval", "--neural_cache", "--tune_file", str(files["valid"])]
        command += ["--stats_file", str(files["train"])]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"evaluation failed:\n{result.stderr[-3000:]}")
    metrics = json.loads(result.stdout)
    metrics["wall_s"] = round(time.monotonic() - started, 1)
    return metrics


def our_results(args, files, recipe: str, run_dir: Path) -> dict:
    """One run of ours: its recipe, training, the run's own validation and the test evaluation."""
    run = json.loads((run_dir / "run_info.json").read_text())
    scores = evaluate_ours(args, files, run_dir)
    static = scores["perplexity"]
    results = {
        "recipe": str(Path(recipe).resolve().relative_to(ROOT))
        if Path(recipe).resolve().is_relative_to(ROOT)
        else recipe,
        "cell_type": json.loads((run_dir / "config.json").read_text())["cell_type"],  # the saved model's
        "command": run["command"],
        "train_wall_s": run["metrics"].get("train_runtime"),
        "epochs": run["metrics"].get("epoch"),
        "valid_perplexity": run["metrics"].get("eval_perplexity"),
        "test_perplexity": static,
        "evaluation_wall_s": scores["wall_s"],
        "curve": our_curve(run_dir),
    }
    if not args.static_only:
        results.update(
            neural_cache_perplexity=scores.get("neural_cache_perplexity"),
            dynamic_eval_perplexity=scores.get("dynamic_eval_perplexity"),
            neural_cache_gain=scores["neural_cache_perplexity"] / static - 1,
            dynamic_eval_gain=scores["dynamic_eval_perplexity"] / static - 1,
            adaptive_settings=scores.get("settings"),
        )
    return results


def recipe_label(run: dict) -> str:
    return f"ours ({run['cell_type']}, {Path(run['recipe']).name})"


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
    ours = our_results(args, files, args.recipe, out / "ours")
    recipes = {"ours": ours}
    if args.beside:
        recipes["beside"] = our_results(args, files, args.beside, out / "beside")
    curves = {recipe_label(run): run["curve"] for run in recipes.values()}
    if not args.beside:
        peer = json.loads((out / "peer.json").read_text())
        curves["peer (word_language_model 2x200)"] = [
            {"wall_s": p["wall_s"], "valid_perplexity": p["valid_perplexity"]} for p in peer["curve"]
        ]
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
        **recipes,
        "plot": png.name,
    }
    if not args.beside:
        results["peer"] = {
            "recipe": "pytorch/examples word_language_model: 2x200 tied LSTM, dropout 0.2, SGD lr 20 /4 on plateau, "
            "clip 0.25, bptt 35, batch 20 (bench/peer_word_language_model.py)",
            "valid_perplexity": peer["best_valid_perplexity"],
            "test_perplexity": peer["test_perplexity"],
            "epochs": peer["epochs_completed"],
            "train_wall_s": peer["train_wall_s"],
            "curve": curves["peer (word_language_model 2x200)"],
        }
        results["ours_beats_peer_static"] = ours["test_perplexity"] < peer["test_perplexity"]
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    for run in recipes.values():
        adaptive = "" if args.static_only else (
            f", cache {run['neural_cache_perplexity']:.2f}, dynamic {run['dynamic_eval_perplexity']:.2f}"
        )  # fmt: skip
        print(f"{recipe_label(run)}: {run['epochs']:.1f} epochs, test {run['test_perplexity']:.2f}{adaptive}")
    if not args.beside:
        print(f"peer: test {results['peer']['test_perplexity']:.2f}")
    return results


if __name__ == "__main__":
    main()
