"""The recorded experiment of docs/analysis.md: gradient flow and agreement of rnn vs lstm vs gru, plus exploding
gradients in a vanilla RNN with and without clipping. CPU, one thread per process, two processes at a time.

    python bench/theory.py            # about 15 minutes on 2 cores: runs/theory/, results in bench/results/theory/
    SMOKE=1 python bench/theory.py    # tiny sizes, under a minute: checks the pipeline end to end

Every model is 1 x 128 units, trained by `training/train_clm.py` with the same arguments per corpus: the built-in
demo corpus (20k sentences) and the first PTB_LINES lines of PTB's training split (Mikolov's version).
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SMOKE = os.environ.get("SMOKE") == "1"
RUNS = ROOT / "runs" / ("theory_smoke" if SMOKE else "theory")
RESULTS = ROOT / "bench" / "results" / ("theory_smoke" if SMOKE else "theory")
PTB = ROOT.parent / "shared" / "data" / "ptb"
PTB_LINES = 300 if SMOKE else 15000
HIDDEN = 16 if SMOKE else 128
CELLS = ("rnn", "lstm", "gru")
COMMON = [
    "--tokenizer_kind", "word", "--block_size", "35", "--stateful", "true", "--do_train", "--do_eval",
    "--per_device_train_batch_size", "20", "--per_device_eval_batch_size", "10", "--eval_strategy", "epoch",
    "--save_strategy", "no", "--report_to", "none", "--use_cpu", "--seed", "42", "--num_samples", "0",
    "--disable_tqdm", "true", "--logging_steps", "10",
]  # fmt: skip
TRAINED = ["--optim", "adamw_torch", "--learning_rate", "0.005", "--max_grad_norm", "0.25", "--warmup_steps", "20"]
DEMO = ["--demo_sentences", "300" if SMOKE else "20000", "--num_train_epochs", "1" if SMOKE else "3"]
WARMUP_LINES = 3  # validation lines read before every agreement pair in the "warm" measurement
# The exploding case: a ReLU RNN and plain SGD at learning rate 1, once clipped at 0.25 and once not.
EXPLODE = ["--optim", "sgd", "--learning_rate", "1.0", "--on_nonfinite", "skip", "--logging_steps", "5"]


def write_ptb_data() -> None:
    """The PTB subset: the first PTB_LINES training lines, and the whole validation split."""
    folder = RUNS / "ptb_data"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (PTB / "ptb.train.txt").read_text().splitlines(keepends=True)[:PTB_LINES]
    (folder / "train.txt").write_text("".join(lines))
    valid = (PTB / "ptb.valid.txt").read_text().splitlines(keepends=True)[: 300 if SMOKE else None]
    (folder / "valid.txt").write_text("".join(valid))


def ptb_arguments() -> list[str]:
    folder = RUNS / "ptb_data"
    epochs = "1" if SMOKE else "2"
    return ["--train_file", str(folder / "train.txt"), "--validation_file", str(folder / "valid.txt")] + [
        "--num_train_epochs",
        epochs,
    ]


def jobs() -> dict[str, list[str]]:
    """name -> train_clm.py arguments."""
    runs = {}
    ptb = ptb_arguments() if PTB.is_dir() else None
    for cell in CELLS:
        overrides = ["--config_overrides", f"cell_type={cell},hidden_size={HIDDEN},num_hidden_layers=1"]
        runs[f"demo_{cell}"] = COMMON + TRAINED + DEMO + overrides
        if ptb:
            runs[f"ptb_{cell}"] = COMMON + TRAINED + ptb + overrides
    relu = ["--config_overrides", f"cell_type=rnn,rnn_nonlinearity=relu,hidden_size={HIDDEN},num_hidden_layers=1"]
    one_epoch = ["--demo_sentences", "300" if SMOKE else "10000", "--num_train_epochs", "1"]
    for clip in ("0", "0.25"):
        runs[f"explode_clip{clip}"] = COMMON + one_epoch + relu + EXPLODE + ["--max_grad_norm", clip]
    return runs


def train_all(runs: dict[str, list[str]], parallel: int = 2) -> dict[str, float]:
    """Run the trainings two at a time; returns the wall seconds of each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    # A run whose folder holds its results already is not trained again (rerun the analysis alone).
    pending = [(name, args) for name, args in runs.items() if not (RUNS / name / "all_results.json").is_file()]
    running, seconds = {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, args = pending.pop(0)
            out = RUNS / name
            log = open(RUNS / f"{name}.log", "w")  # noqa: SIM115 (open while the child writes; closed at exit)
            command = [sys.executable, str(ROOT / "training" / "train_clm.py"), "--output_dir", str(out), *args]
            running[name] = (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), time.time())
        time.sleep(2)
        for name, (process, start) in list(running.items()):
            if process.poll() is not None:
                seconds[name] = round(time.time() - start, 1)
                print(f"{name}: exit {process.returncode} after {seconds[name]} s", flush=True)
                if process.returncode != 0:
                    raise RuntimeError(f"training {name} failed: see {RUNS / name}.log")
                del running[name]
    return seconds


def training_curves(name: str) -> dict[str, list]:
    """The CSV log of a run as {name: [(step, value), ...]}."""
    curves = {}
    with open(RUNS / name / "training_log.csv") as handle:
        for row in csv.DictReader(handle):
            curves.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    return curves


def plot_exploding(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, curve in curves.items():
        # A log whose window had a non-finite step shows no loss (Trainer's nan filter logs 0) and a NaN norm.
        counts = dict(curve.get("nonfinite_steps", []))
        previous = dict(zip(sorted(counts)[1:], [counts[s] for s in sorted(counts)]))
        broken = {s for s, c in counts.items() if c > previous.get(s, 0)}
        for axis, key in zip(axes, ("loss", "grad_norm")):
            points = [(s, v) for s, v in curve.get(key, []) if s not in broken and v == v]
            axis.plot([s for s, _ in points], [v for _, v in points], marker=".", label=name)
            if broken:
                axis.axvspan(min(broken) - 5, max(broken), color="tab:red", alpha=0.08, label=f"{name}: non-finite")
    for axis, key in zip(axes, ("training loss (logs with non-finite steps omitted)", "pre-clip gradient norm")):
        axis.set_yscale("log")
        axis.set_xlabel("optimizer step")
        axis.set_title(key)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_agreement_comparison(summary: dict, suffix: str, path: Path) -> None:
    """Accuracy by distance, attractors and construction, one line per cell type and corpus (keys ending in
    `suffix`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for key, result in summary.items():
        if not key.endswith(suffix):
            continue
        label = key.removesuffix(suffix).replace("_", " ")
        style = "-" if key.startswith("demo") else "--"
        for axis, field in zip(axes, ("distance", "attractors", "construction")):
            groups = result["by"][field]
            axis.plot(list(groups), [g["accuracy"] for g in groups.values()], style, marker="o", label=label)
    for axis, field in zip(axes, ("distance (words from head noun to verb)", "attractors", "construction")):
        axis.axhline(0.5, color="grey", linestyle=":")
        axis.set_ylim(0, 1.02)
        axis.set_xlabel(field)
        axis.set_ylabel("agreement accuracy")
        axis.grid(True, alpha=0.3)
        axis.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def out_of_vocabulary(pairs_file: Path, model_dir: Path) -> list[str]:
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    words = set()
    for line in pairs_file.read_text().splitlines():
        pair = json.loads(line)
        words.update(" ".join([pair["prefix"], pair["good"], pair["bad"]]).split())
    return sorted(w for w in words if w not in vocab)


def analyze(runs: dict[str, list[str]]) -> dict:
    sys.path.insert(0, str(ROOT))
    from rnn_lm_hf import analysis

    summary = {}
    for corpus, text in (("demo", RUNS / "demo_rnn" / "data" / "test.txt"), ("ptb", RUNS / "ptb_data" / "valid.txt")):
        if f"{corpus}_rnn" not in runs:
            continue
        models = [f"{cell}={RUNS / f'{corpus}_{cell}'}" for cell in CELLS]
        models += [f"{cell} (init)=init:{RUNS / f'{corpus}_{cell}'}" for cell in CELLS]
        out = RESULTS / f"{corpus}_gradients"
        analysis.main(["gradients", *models, "--file", str(text), "--output_dir", str(out), "--max_length", "40"])
        summary[f"{corpus}_gradients"] = json.loads((out / "gradients.json").read_text())
        pairs = RESULTS / f"{corpus}_pairs.jsonl"
        analysis.main(["pairs", "--output", str(pairs), "--n", "200" if SMOKE else "2000", "--lexicon", corpus])
        summary[f"{corpus}_oov_pair_words"] = out_of_vocabulary(pairs, RUNS / f"{corpus}_rnn")
        # Fresh: each pair starts from a zero state after one <eos>. Warm: after the first WARMUP_LINES lines of the
        # validation split (each ending in <eos>), as in the carried-state stream the models were trained on.
        valid = RUNS / "demo_rnn" / "data" / "validation.txt" if corpus == "demo" else text
        warmup = " ".join(line.strip() + " <eos>" for line in valid.read_text().splitlines()[:WARMUP_LINES])
        summary[f"{corpus}_warmup_context"] = warmup
        for cell in CELLS:
            model = f"{cell}={RUNS / f'{corpus}_{cell}'}"
            for suffix, context in (("agreement", ""), ("agreement_warm", warmup)):
                out = RESULTS / f"{corpus}_{cell}_{suffix}"
                agreement = ["agreement", model, "--pairs", str(pairs), "--output_dir", str(out)]
                analysis.main([*agreement, "--context", context])
                summary[f"{corpus}_{cell}_{suffix}"] = json.loads((out / "agreement.json").read_text())
            results = RUNS / f"{corpus}_{cell}" / "all_results.json"
            summary[f"{corpus}_{cell}_results"] = json.loads(results.read_text())
    plot_agreement_comparison(summary, "_agreement", RESULTS / "agreement_comparison.png")
    plot_agreement_comparison(summary, "_agreement_warm", RESULTS / "agreement_comparison_warm.png")
    curves = {name: training_curves(name) for name in runs if name.startswith("explode")}
    plot_exploding(curves, RESULTS / "exploding.png")
    summary["exploding"] = curves
    return summary


def main() -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = jobs()
    if PTB.is_dir():
        write_ptb_data()
    start = time.time()
    seconds = train_all(runs)
    summary = analyze(runs)
    summary["train_seconds"] = seconds
    summary["total_seconds"] = round(time.time() - start, 1)
    summary["arguments"] = runs
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {RESULTS}/summary.json in {summary['total_seconds']} s")


if __name__ == "__main__":
    main()
