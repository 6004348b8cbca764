"""Every shell command README.md and docs/*.md show, and every example `rnn-lm --help` prints, run as a user types it.

Each runs as a subprocess in a folder laid out like a fresh clone (`training/`, `tests/`, `bench/`, with no
`../shared` beside it unless the command reads the data sets), with only the arguments shown. Placeholders (`ARGS`,
`DIR`, a corpus) are filled with tiny data, and sizes are shrunk only through options the docs name. The fast ones run
in the default suite; long ones are marked slow (`pytest -m slow`), those reading ../shared/data skip without it,
GPU ones skip without CUDA. `test_every_documented_command_is_run_here` fails when the docs show a command that no
scenario runs, so a new command in the docs needs a scenario here.
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rnn_lm_hf.cli import COMMANDS
from rnn_lm_hf.demo_corpus import write_demo_corpus
from tests.conftest import SHARED_DATA
from tests.hub_server import HubServer


REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# bad_inputs.md shows the bad commands it lists; tests/test_bad_inputs.py runs each of them.
NOT_USAGE = {REPO / "docs" / "bad_inputs.md"}
BIN = Path(sys.executable).parent
TOKEN = "hf_" + "DocumentedCommandsOnly" * 2


# ----------------------------------------------------------------------------------------- what the docs show


def shell_lines(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and `export` lines dropped; a here-document
    stays with its command (`python - <<'EOF'`, its lines, `EOF`)."""
    commands, lines = [], iter(block.replace("\\\n", " ").splitlines())
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment; '#' inside a word stays
        if not line or line.startswith(("#", "export ")):
            continue
        command = " ".join(line.split())
        if here := re.search(r"<<-?'?(\w+)'?", line):
            body = []
            for body_line in lines:
                body.append(body_line)
                if body_line.strip() == here[1]:
                    break
            command = "\n".join([command, *body])
        commands.append(command)
    return commands


def is_command(span: str) -> bool:
    """An inline code span that runs something: a flag or a path among its arguments (`rnn-lm analyze gradients`
    alone names a command, it does not run one)."""
    words = span.split()
    return "..." not in span and (
        span in ("rnn-lm demo", "make demo") or any(w.startswith("-") or "/" in w or "." in w for w in words[1:])
    )


def documented_commands() -> set[str]:
    """Fenced bash blocks, and inline code spans that run something."""
    commands = set()
    for path in DOCS:
        if path in NOT_USAGE:
            continue
        text = path.read_text()
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
            commands.update(shell_lines(block))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`((?:rnn-lm|python|accelerate|make|bash|SMOKE=1) [^`]*)`", prose):
            if is_command(span := " ".join(span.split())):
                commands.add(span)
    return commands


@functools.cache
def help_examples() -> frozenset[str]:
    """The example lines `rnn-lm --help` prints."""
    result = subprocess.run([str(BIN / "rnn-lm"), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return frozenset(shell_lines(line)[0] for line in result.stdout.splitlines() if line.startswith("rnn-lm "))


# ----------------------------------------------------------------------------------------- how each one runs here


@dataclass
class Step:
    shown: str | None  # as the docs show it; None for a set-up step the docs take for granted
    run: str | None = None  # as run here when it differs: placeholders filled, sizes shrunk by documented options
    check: object = None  # check(sandbox, completed_process) for what the docs promise beyond exit status 0
    extra: str = ""  # options appended to the command (sizes shrunk by documented options)

    @property
    def command(self) -> str:
        return f"{self.run or self.shown} {self.extra}".strip()


@dataclass
class Scenario:
    steps: list[Step]
    marks: tuple = ()
    needs_shared: bool = False
    hub: bool = False  # a local Hub (tests/hub_server.py) stands in for huggingface.co
    env: dict = field(default_factory=dict)


def json_out(completed) -> dict:
    return json.loads(completed.stdout[completed.stdout.index("{") :])


def run_info(sandbox: Path, folder: str) -> dict:
    return json.loads((sandbox / folder / "run_info.json").read_text())


def trained(folder: str, *metrics: str):
    """The run trained and saved a model, and reported these metrics."""

    def check(sandbox, completed):
        saved = sandbox / folder
        assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file(), completed.stdout[-2000:]
        assert "train_loss" in run_info(sandbox, folder)["metrics"] or "train_runtime" in json.loads(
            (saved / "all_results.json").read_text()
        )
        reported = run_info(sandbox, folder)["metrics"]
        for metric in metrics:
            assert metric in reported, (metric, sorted(reported))

    return check


def same_as_the_run(folder: str, split: str):
    """`rnn-lm evaluate` with default flags gives the number the run itself reported (README's promise)."""

    def check(sandbox, completed):
        reported = run_info(sandbox, folder)["metrics"][f"{split}_perplexity"]
        assert json_out(completed)["perplexity"] == pytest.approx(reported, rel=1e-6)

    return check


def printed(*parts: str):
    def check(sandbox, completed):
        for part in parts:
            assert part in completed.stdout, (part, completed.stdout[-2000:])

    return check


def demo_printed(sandbox, completed):
    """The demo's result line, and samples that continue their prompts after a space (a word-level tokenizer's
    continuation must not be glued to the prompt); a sample may also end at once with <eos>."""
    assert "[result] perplexity" in completed.stdout, completed.stdout[-2000:]
    samples = re.findall(r"^\[sample\] (.*)$", completed.stdout, flags=re.M)
    prompts = ["the writer of the books", "the keys to the cabinet", "the doctors that the author likes"]
    assert len(samples) == len(prompts), completed.stdout[-2000:]
    for prompt, sample in zip(prompts, samples):
        assert re.fullmatch(rf"{prompt}( \S.*)?", sample), (prompt, sample)


def files(*paths: str):
    def check(sandbox, completed):
        for path in paths:
            assert (sandbox / path).is_file() and (sandbox / path).stat().st_size > 0, path

    return check


def never_worse_than_static(sandbox, completed):
    result = json_out(completed)
    for key in ("dynamic_eval_perplexity", "neural_cache_perplexity"):
        worse = result[key] > result["perplexity"]
        assert not worse or any("worse" in str(value) for value in result.values()), result


DEMO = "--demo_sentences 2000 --num_train_epochs 1"  # train_clm.py's own options: a smaller built-in corpus
TINY_LM = "--config_overrides cell_type={cell},hidden_size=32 --demo_sentences 1000 --num_train_epochs 1"
CORPUS_FILES = {"corpus.txt": "train", "my.txt": "train", "train.txt": "train", "valid.txt": "validation"}
CORPUS_FILES["test.txt"] = "test"

SCENARIOS = {
    "quick start": Scenario(
        [
            Step("make demo", f"rnn-lm demo {DEMO}", demo_printed),
            Step("rnn-lm demo", f"rnn-lm demo {DEMO} --output_dir outputs/again", trained("outputs/again")),
        ]
    ),
    "training a language model": Scenario(
        [
            Step(
                "rnn-lm train --train_file corpus.txt --output_dir out/my-lm --tokenizer_kind bpe --config_overrides "
                '"cell_type=lstm,hidden_size=512,num_hidden_layers=2,dropout=0.3" --block_size 35 '
                "--per_device_train_batch_size 32 --num_train_epochs 10 --optim adamw_torch --learning_rate 3e-3 "
                "--lr_scheduler_type cosine --max_grad_norm 0.25 --eval_strategy epoch --save_strategy epoch",
                check=trained("out/my-lm", "eval_perplexity"),
            ),
            Step("rnn-lm evaluate out/my-lm --file test.txt", check=printed('"perplexity"')),
            Step('rnn-lm generate out/my-lm "Once upon a time" --do_sample --top_p 0.9', check=printed("Once upon a")),
            Step(
                "rnn-lm tokenizer corpus.txt --kind bpe --vocab_size 8000 --output_dir tok",
                check=files("tok/tokenizer.json"),
            ),
        ]
    ),
    "a character-level LM": Scenario(
        [
            Step(
                "rnn-lm train --train_file train.txt --validation_file valid.txt --test_file test.txt "
                "--tokenizer_kind char --add_eos False --keep_linebreaks True --output_dir runs/char",
                extra="--num_train_epochs 1 --per_device_eval_batch_size 4",  # 4 streams: the report must still be one
                check=trained("runs/char", "test_perplexity"),
            ),
            Step("rnn-lm evaluate runs/char --file test.txt", check=same_as_the_run("runs/char", "test")),
        ]
    ),
    "rnn-lm --help": Scenario(
        [
            Step("rnn-lm --help", check=printed("rnn-lm demo", "Every command takes --help")),
            Step(
                'rnn-lm train --train_file my.txt --output_dir out --config_overrides "cell_type=gru"',
                check=trained("out", "eval_perplexity"),
            ),
            Step("rnn-lm evaluate out --file test.txt", check=printed('"perplexity"')),
            Step('rnn-lm generate out "the writer of" --do_sample --top_k 40', check=printed("the writer of ")),
            Step(
                "rnn-lm train-tagger --train_file train.conll --validation_file dev.conll --output_dir tagger",
                check=trained("tagger", "eval_f1"),
            ),
            Step(
                "rnn-lm train-classifier --train_file train.tsv --validation_file dev.tsv --output_dir classifier",
                check=trained("classifier", "eval_accuracy"),
            ),
            Step("rnn-lm tokenizer corpus.txt --kind bpe --output_dir tok", check=files("tok/tokenizer.json")),
            Step(
                "rnn-lm analyze gradients out --file test.txt --output_dir analysis",
                check=files("analysis/gradients.json", "analysis/gradients.png"),
            ),
            Step(None, "rnn-lm analyze pairs --output pairs.jsonl --n 100"),
            Step(
                "rnn-lm analyze agreement out --pairs pairs.jsonl --output_dir analysis",
                check=files("analysis/agreement.json", "analysis/agreement.png"),
            ),
            Step("rnn-lm plot out", check=files("out/training_curves.png")),
            Step("rnn-lm card out", check=files("out/README.md")),
            Step("rnn-lm check out", check=printed("model.safetensors")),
            Step("rnn-lm push out org/name", check=printed("Published org/name")),
            Step("rnn-lm --threads 2 evaluate out --file test.txt", check=printed('"perplexity"')),
            Step("rnn-lm demo", f"rnn-lm demo {DEMO}", trained("outputs/rnn-lm-demo")),
        ],
        hub=True,
    ),
    "README: several processes": Scenario(
        [
            Step(
                "accelerate launch --config_file training/configs/accelerate/cpu.yaml training/train_clm.py ARGS "
                "--use_cpu True",
                "accelerate launch --config_file training/configs/accelerate/cpu.yaml training/train_clm.py "
                "--train_file my.txt --output_dir out/ddp --num_train_epochs 1 --use_cpu True",
                trained("out/ddp"),
            )
        ],
        marks=(pytest.mark.slow,),
    ),
    "README: GPUs": Scenario(
        [
            Step(
                "accelerate launch --config_file training/configs/accelerate/1gpu.yaml training/train_clm.py ARGS",
                "accelerate launch --config_file training/configs/accelerate/1gpu.yaml training/train_clm.py "
                "--train_file my.txt --output_dir out/gpu --num_train_epochs 1",
            ),
            Step(
                "accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml --num_processes 4 "
                "training/train_clm.py ARGS",
                "accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml --num_processes "
                f"{os.environ.get('DOCUMENTED_GPUS', '4')} training/train_clm.py --train_file my.txt "
                "--output_dir out/gpus --num_train_epochs 1",
            ),
            # AWD-LSTM at the paper's size (24M parameters): its final one-stream evaluations of PTB take long on a CPU.
            Step("rnn-lm train training/configs/awd_lstm_ptb.json", extra="--max_steps 2"),
            Step("bash bench/gpu_bundle.sh && bash bench/gpu_session.sh"),
            Step("bash bench/gpu_bundle.sh"),
            Step(
                "OUT=/path/to/results BUDGET_S=540 bash bench/gpu_session.sh",
                "OUT=results BUDGET_S=540 bash bench/gpu_session.sh",
            ),
        ],
        marks=(pytest.mark.gpu,),
        needs_shared=True,
    ),
    "README: why RNNs need gates": Scenario(
        [
            *(
                Step(None, f"rnn-lm demo --output_dir runs/demo_{cell} {TINY_LM.format(cell=cell)}")
                for cell in ("rnn", "lstm", "gru")
            ),
            Step(
                'rnn-lm analyze gradients rnn=runs/demo_rnn lstm=runs/demo_lstm "rnn (init)=init:runs/demo_rnn" '
                "--file runs/demo_rnn/data/test.txt --output_dir out/gradients",
                check=files("out/gradients/gradients.json", "out/gradients/gradients.png"),
            ),
            Step(
                "rnn-lm analyze pairs --output pairs.jsonl --n 2000 [--lexicon ptb] [--kind sentence]",
                "rnn-lm analyze pairs --output pairs.jsonl --n 2000",
            ),
            Step(None, "rnn-lm analyze pairs --output ptb_pairs.jsonl --n 2000 --lexicon ptb --kind sentence"),
            Step("rnn-lm analyze pairs --n 2000", extra="--output more_pairs.jsonl"),
            Step(
                "rnn-lm analyze agreement runs/demo_gru --pairs pairs.jsonl --output_dir out/agreement",
                check=files("out/agreement/agreement.json", "out/agreement/agreement.png"),
            ),
        ],
        marks=(pytest.mark.slow,),
    ),
    "docs/hub.md": Scenario(
        [
            Step(None, f"rnn-lm demo --output_dir runs/clm-lstm {TINY_LM.format(cell='lstm')}"),
            Step("rnn-lm card runs/clm-lstm --repo_id my-org/ptb-lstm-2x650", check=files("runs/clm-lstm/README.md")),
            Step("rnn-lm card DIR", "rnn-lm card runs/clm-lstm"),
            Step(None, "cp -r runs/clm-lstm runs/plain-trainer && rm runs/plain-trainer/run_info.json"),
            Step(
                "rnn-lm card runs/plain-trainer --dataset Salesforce/wikitext --repo_id my-org/wikitext2-lstm",
                check=files("runs/plain-trainer/README.md"),
            ),
            Step("rnn-lm check runs/clm-lstm", check=printed("model.safetensors")),
            Step("rnn-lm check DIR", "rnn-lm check runs/clm-lstm"),
            Step(
                "rnn-lm push runs/clm-lstm my-org/ptb-lstm-2x650 [--private] [--revision v1.0]",
                "rnn-lm push runs/clm-lstm my-org/ptb-lstm-2x650 --private --revision v1.0",
                printed("Published my-org/ptb-lstm-2x650"),
            ),
            Step(
                "rnn-lm push DIR org/name [--private] [--revision BRANCH] [--commit_message MSG]",
                "rnn-lm push runs/clm-lstm org/name --commit_message first",
                printed("Published org/name"),
            ),
            Step("rnn-lm plot DIR", "rnn-lm plot runs/clm-lstm", files("runs/clm-lstm/training_curves.png")),
            Step("rnn-lm --threads N COMMAND", "rnn-lm --threads 1 check runs/clm-lstm"),
        ],
        marks=(pytest.mark.slow,),
        hub=True,
    ),
    "README: recipes on the shared data sets": Scenario(
        [
            # A few steps of each recipe through its real data: it parses, reads, trains and saves.
            Step(
                "rnn-lm train training/configs/ptb_small_zaremba.json",
                extra="--max_steps 5 --eval_strategy no",
            ),
            Step(
                "rnn-lm train training/configs/ptb_awd_budget_cpu.json",
                extra="--max_steps 5",
            ),
            Step(
                "rnn-lm evaluate runs/ptb_awd_budget_cpu --file ../shared/data/ptb/ptb.test.txt --neural_cache "
                "--dynamic_eval --tune_file ../shared/data/ptb/ptb.valid.txt",
                extra="--tune_tokens 500",
                check=never_worse_than_static,
            ),
            Step(
                "rnn-lm train-tagger training/configs/wnut17_bilstm.json",
                extra="--max_steps 5",  # it keeps the best epoch's model: its eval strategy stays
            ),
            Step(
                "rnn-lm train-classifier training/configs/rt_polarity_bilstm.json",
                extra="--max_steps 5 --cv_fold_indices 0",
            ),
            Step(
                "rnn-lm train training/configs/wikitext2_lm_transfer.json --use_cpu false",
                "rnn-lm train training/configs/wikitext2_lm_transfer.json --max_steps 5 --use_cpu true",  # README: on
                # CPU, drop --use_cpu false
            ),
            Step(
                "rnn-lm train-classifier --model_name_or_path runs/lm_wikitext2 --train_file "
                "../shared/data/sst2/sentence_level/stsa.binary.train --validation_file "
                "../shared/data/sst2/sentence_level/stsa.binary.dev --test_file "
                "../shared/data/sst2/sentence_level/stsa.binary.test --config_overrides classifier_pooling=concat "
                "--learning_rate 1e-3 --num_train_epochs 6 --eval_strategy epoch --save_strategy epoch "
                "--load_best_model_at_end --metric_for_best_model accuracy --do_train --do_eval --do_predict "
                "--output_dir runs/sst2_from_lm",
                extra="--max_steps 5 --max_eval_samples 50 --max_predict_samples 50",
                check=trained("runs/sst2_from_lm", "test_accuracy"),
            ),
            Step(
                "rnn-lm train training/configs/wikitext2_bilm.json --output_dir runs/bilm_wikitext2",
                extra="--max_steps 5",
            ),
            Step(
                "rnn-lm train-tagger training/configs/ud_ewt_upos_bilstm.json --model_name_or_path "
                "runs/bilm_wikitext2 --config_overrides use_crf=true,layer_mix=true --output_dir runs/ud_from_bilm",
                extra="--max_steps 5 --max_eval_samples 50 --max_predict_samples 50",
                check=trained("runs/ud_from_bilm"),
            ),
        ],
        marks=(pytest.mark.slow,),
        needs_shared=True,
    ),
    "benchmarks": Scenario(
        [
            Step(
                "python bench/downstream.py",
                extra="--only wnut17 --deadline_minutes 1 --runs_dir runs/bench --results bench_downstream.json",
            ),
            Step(None, f"rnn-lm demo --output_dir runs/demo_lm {TINY_LM.format(cell='lstm')}"),
            Step(
                "python bench/downstream.py --pretrained_lm runs/lm_wikitext2 --init scratch-lm pretrained",
                "python bench/downstream.py --pretrained_lm runs/demo_lm --init scratch-lm pretrained --only wnut17 "
                "--deadline_minutes 1 --runs_dir runs/bench --results bench_downstream.json",
            ),
            Step(
                "python bench/cells.py --threads 1",
                "python bench/cells.py --threads 1 --widths 16 --vocab 50 --batch 2 --bptt 9 --repeats 1 "
                "--train-steps 1 --warmup 1 --prompt 5 --new-tokens 3 --out cells.json",
            ),
            Step(
                "python bench/speed.py --device cpu --sizes full --threads 2",
                "python bench/speed.py --device cpu --sizes tiny --threads 2 --out speed.json",
                files("speed.json"),
            ),
            Step("SMOKE=1 python bench/theory.py"),
            Step("python bench/theory.py", "SMOKE=1 python bench/theory.py"),
            Step(
                "SMOKE=1 BUDGET_S=900 bash bench/gpu_session.sh",
                "SMOKE=1 BUDGET_S=900 OUT=gpu_out bash bench/gpu_session.sh",
            ),
        ],
        marks=(pytest.mark.slow,),
        needs_shared=True,
    ),
}

# Commands that run the test suite or the linter themselves: .ci/run runs them (make test, on both transformers).
SUITE = {
    "make test",
    "python -m pytest",
    ".venv/bin/python -m pytest -m slow",
    ".venv/bin/python -m pytest -m gpu",
    "make test-lower",
    "make lint",
    "bash .ci/run",
}


def run_elsewhere() -> set[str]:
    """docs/hub.md's offline push session (a server left running in a second terminal): tests/test_hub.py runs its two
    blocks as written."""
    from tests.test_hub import doc_blocks

    return {command for block in doc_blocks("### Trying a push offline", "bash") for command in shell_lines(block)}


def test_every_documented_command_is_run_here():
    run_here = {step.shown for scenario in SCENARIOS.values() for step in scenario.steps if step.shown}
    missing = (documented_commands() | help_examples()) - run_here - SUITE - run_elsewhere()
    assert not missing, f"documented but run by no scenario of this module: {sorted(missing)}"


def test_every_help_example_runs_in_the_default_suite():
    fast = {step.shown for step in SCENARIOS["rnn-lm --help"].steps} | {
        "rnn-lm train training/configs/ptb_small_zaremba.json"
    }
    assert help_examples() <= fast


# ----------------------------------------------------------------------------------------- running them


def sandbox_for(tmp_path: Path, needs_shared: bool) -> Path:
    """A fresh clone's layout: the repository's folders the commands name, tiny data files, and ../shared only
    when the scenario reads it."""
    clone = tmp_path / "rnn-lm-hf"
    clone.mkdir()
    for name in ("training", "tests", "bench", "Makefile", "pyproject.toml"):
        (clone / name).symlink_to(REPO / name)
    if needs_shared:
        if not SHARED_DATA.is_dir():
            pytest.skip("../shared/data is not present")
        (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    splits = write_demo_corpus(tmp_path / "corpus", num_train=600, num_validation=60, num_test=60, seed=3)
    for name, split in CORPUS_FILES.items():
        shutil.copy(splits[split], clone / name)
    fixtures = REPO / "tests" / "fixtures"
    for source in ("ner/train.conll", "ner/dev.conll", "sentiment/train.tsv", "sentiment/dev.tsv"):
        shutil.copy(fixtures / source, clone / Path(source).name)
    return clone


@pytest.mark.parametrize("name", [pytest.param(name, marks=scenario.marks) for name, scenario in SCENARIOS.items()])
@pytest.mark.timeout(3600)  # the slow scenarios run whole recipes' set-up and evaluation; each step has its own limit
def test_documented_commands_run_as_shown(name, tmp_path):
    scenario = SCENARIOS[name]
    sandbox = sandbox_for(tmp_path, scenario.needs_shared)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), **scenario.env}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # as a user's shell: the installed package, not the test runner's path
    server = HubServer(token=TOKEN).start() if scenario.hub else None
    try:
        if server is not None:
            env.update(HF_ENDPOINT=server.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1")
        for step in scenario.steps:
            command = step.command
            step_env = dict(env)
            if server is not None and " push " in command:
                step_env.pop("HF_HUB_OFFLINE")  # a push goes online (to the local Hub)
            # bash, as a user's shell, with this environment's executables (rnn-lm, python, accelerate) first
            completed = subprocess.run(
                ["bash", "-e", "-c", command], cwd=sandbox, env=step_env, capture_output=True, text=True, timeout=1800
            )
            output = (completed.stdout + completed.stderr)[-4000:]
            assert completed.returncode == 0, f"{command}\n{output}"
            assert "Traceback" not in completed.stderr, f"{command}\n{output}"
            if step.check is not None:
                step.check(sandbox, completed)
    finally:
        if server is not None:
            server.stop()


HELP = [
    ["--help"],
    *(
        [command, "--help"]
        for command in ("demo", "train", "train-tagger", "train-classifier", "evaluate", "generate")
    ),
    *([command, "--help"] for command in ("plot", "tokenizer", "analyze", "card", "check", "push")),
    *(["analyze", command, "--help"] for command in ("gradients", "agreement", "pairs")),
]
SCRIPTS = ["train_clm", "train_token_classification", "train_sequence_classification"]
# One process runs every --help (a process start costs seconds): `rnn-lm ...` through its entry point, the scripts
# as `python training/SCRIPT.py --help` would (runpy), each with its exit status.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
from rnn_lm_hf.cli import main
statuses = {}
for argv in json.loads(sys.argv[1]):
    sys.argv = argv if argv[0].endswith(".py") else ["rnn-lm", *argv]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = runpy.run_path(argv[0], run_name="__main__") if argv[0].endswith(".py") else main(argv)
    except SystemExit as exit:
        status = exit.code
    statuses[" ".join(argv)] = [status or 0, out.getvalue()]
print(json.dumps(statuses))
"""


def test_every_help_exits_0():
    argvs = [*HELP, *([f"training/{script}.py", "--help"] for script in SCRIPTS)]
    assert {argv[0] for argv in HELP if argv[0] != "--help"} >= set(COMMANDS)
    completed = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, json.dumps(argvs)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    statuses = json.loads(completed.stdout.splitlines()[-1])
    assert len(statuses) == len(argvs)
    for argv, (status, output) in statuses.items():
        assert status == 0 and ("usage" in output.lower() or "rnn-lm" in output), (argv, status, output[-500:])
