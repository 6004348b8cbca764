"""What the three training scripts share, so each of them reads like `run_clm.py`/`run_ner.py`/`run_glue.py`:

- the command line: `script.py [args.json|args.yaml] [--flag value ...]` (`parse_script_args`), per-script defaults
  for the options not given, and `run_main`, which turns bad input into one `error:` line;
- `RunArguments` (threads, the CPU allocator, what to do on a non-finite loss, when to stop) and the callbacks they
  ask for;
- `ModelArguments`, the tokenizer (`get_tokenizer`) and the model (`build_model`): new from a config, or loaded from a
  checkpoint, also into another head (transfer: the shared `model.*` weights load, the new head starts fresh).

Imports run one way: `rnn_lm_hf.cli` -> `training/` -> the library (`rnn_lm_hf.*`), never back.
"""

import argparse
import ctypes
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerFast

from rnn_lm_hf import RNNLMConfig
from rnn_lm_hf.hub import check_model_source
from rnn_lm_hf.modeling_rnn_lm import spelling_table
from rnn_lm_hf.tokenization import TOKENIZER_KINDS, train_tokenizer, word_tokenizer_lowercases
from rnn_lm_hf.trainer import CSVLogCallback, GradientHealthCallback, TimeBudgetCallback


logger = logging.getLogger(__name__)

# Trainer's defaults (learning rate 5e-5, a log line every 500 steps) are made for fine-tuning pretrained
# transformers; an RNN trained from scratch barely moves at 5e-5, and `rnn-lm plot` would get one point. These apply
# only to options the user did not give, as a flag or a config-file key, so `--learning_rate 5e-5` still means 5e-5.
CLM_DEFAULTS = {"learning_rate": 2e-3, "logging_steps": 10, "bf16": "auto"}
# Taggers and classifiers (from scratch or on an LM encoder): on the tiny NER fixture 40 steps reach entity F1 1.0
# at 5e-3 and 0.36 at 5e-5.
FINETUNE_DEFAULTS = {"learning_rate": 5e-3, "logging_steps": 10, "bf16": "auto"}
NONFINITE_ACTIONS = ("stop", "skip")
# `--bf16 auto` (the scripts' default): bf16 mixed precision when training on a CPU that computes bf16 natively, where
# a step takes 0.6-0.85 of its fp32 time (BENCHMARKS section 9); fp32 on one that only emulates bf16, which is slower
# than fp32 there. On a GPU `auto` means fp32, as Trainer's default: pass --bf16 true there.
AUTO = "auto"


def run_main(main, argv: list[str] | None = None) -> int:
    """Run a training script's `main`: bad input ends with one `error:` line naming the problem and the fix (exit
    status 2), never a traceback. DataError is a ValueError; a missing file is an OSError."""
    try:
        main(argv)
    except (ValueError, OSError) as error:
        logging.getLogger(main.__module__).debug("Traceback", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------------------- the run


@dataclass
class RunArguments:
    """How a training script uses the machine, what it does when the loss stops being a number, and when it stops
    early (all scripts)."""

    threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads for torch (torch.set_num_threads). Default: $OMP_NUM_THREADS when set, else half "
            "the CPUs this process may use, at most 4 (torch's own default, every core, oversubscribes a busy "
            "machine: the demo ran 14x slower on 2 shared cores)."
        },
    )
    on_nonfinite: str = field(
        default="stop",
        metadata={
            "help": "When the training loss or a gradient is NaN/inf: 'stop' ends the run with an error before the "
            "optimizer step (the last checkpoint stays good); 'skip' drops that step's update and goes on."
        },
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (needs eval)."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many minutes (checkpoint and evaluation first); no limit if unset."
        },
    )
    reuse_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "On a CPU under Linux (glibc), keep the memory torch frees for reuse instead of handing it back to "
            "the system: otherwise every step maps its large (tokens x vocabulary) buffers anew and page-faults them "
            "in (~8,000 faults per step of a bare PTB 2x200 loop, which took 0.73-0.87x as long without them in four "
            "of five paired runs). The process keeps its peak memory until it ends."
        },
    )
    # What `--bf16 auto` chose and why, logged once the run starts (set by parse_script_args; not an option).
    precision_note: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(
                f"--on_nonfinite must be one of {', '.join(NONFINITE_ACTIONS)}, got {self.on_nonfinite!r}"
            )
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"--max_train_minutes must be > 0, got {self.max_train_minutes}.")

    def callbacks(self, csv_log: str | Path | None = None) -> list:
        """Gradient health (first: its count reaches the CSV log), the CSV log when asked (`csv_log`, the path of
        `rnn-lm plot`'s training_log.csv), and the optional stops."""
        callbacks = [GradientHealthCallback(self.on_nonfinite)]
        if csv_log is not None:
            callbacks.append(CSVLogCallback(csv_log))
        if self.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=self.early_stopping_patience))
        if self.max_train_minutes is not None:
            callbacks.append(TimeBudgetCallback(self.max_train_minutes))
        return callbacks


def default_threads() -> int:
    """$OMP_NUM_THREADS when set, else half the usable CPUs (at most 4): small recurrent layers gain little from
    more intra-op threads, and leaving cores free keeps a shared machine from thrashing."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def set_threads(threads: int | None = None) -> int:
    """`torch.set_num_threads(threads or default_threads())`; returns the count."""
    import torch

    threads = threads or default_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16, which AMX CPUs also have)."""
    return torch.cpu._is_avx512_bf16_supported()


def resolve_bf16(use_cpu: bool) -> tuple[dict[str, str], str | None]:
    """`--bf16 auto` as options (`bf16`, and `use_cpu`, which Trainer needs for bf16 without a GPU) and the line that
    says what was chosen."""
    if not use_cpu and torch.accelerator.is_available():
        return {"bf16": "false"}, None  # a GPU: Trainer's own default
    if native_bf16():
        note = "bf16 mixed precision: this CPU computes bf16 natively (--bf16 false trains in fp32)"
        return {"bf16": "true", "use_cpu": "true"}, note
    note = "fp32: this CPU has no native bf16, and emulated bf16 is slower than fp32 (--bf16 true uses it anyway)"
    return {"bf16": "false"}, note


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse, as the jemalloc/tcmalloc that PyTorch's CPU tuning guide
    recommends do: by default a block above 128 KiB-32 MiB is mmap-ed and unmapped on every free, and the top of the
    heap is trimmed, so the next step faults each page of its logits and gradients in again. Returns whether it
    applied (False off glibc, e.g. macOS or musl)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
    # Below 1 GiB nothing is mmap-ed per call; older glibc caps the threshold at 32 MiB.
    kept = mallopt(mmap_threshold, 2**30) or mallopt(mmap_threshold, 2**25)
    return bool(kept and mallopt(trim_threshold, 2**31 - 1))


def apply_run_arguments(run_args: RunArguments, training_args) -> None:
    """Threads; on CPU, freed memory kept for reuse and no pinned memory (the DataLoader warns about it at every epoch
    and evaluation)."""
    set_threads(run_args.threads)
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False
        if run_args.reuse_freed_memory and not reuse_freed_memory():
            logger.info(
                "--reuse_freed_memory: this C library has no glibc mallopt; the system allocator stays as it is"
            )


# Trainer's do_train/do_eval/do_predict default to False; a user who names a split's file expects it used (as
# `rnn-lm train --train_file my.txt` trains). Each flag turns on when one of its options is given and the flag is not.
IMPLIED_ACTIONS = {"do_train": ("train_file",), "do_eval": ("validation_file",), "do_predict": ("test_file",)}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Options whose help names its own default (`--bf16`: auto, resolved before parsing) do not get argparse's."""

    def _get_help_string(self, action):
        return action.help if "(default:" in (action.help or "") else super()._get_help_string(action)


def parse_script_args(
    dataclass_types: tuple[type, ...],
    argv: list[str] | None = None,
    defaults: dict | None = None,
    implied: dict[str, tuple[str, ...]] = IMPLIED_ACTIONS,
) -> tuple:
    """`script.py [args.json|args.yaml] [--flag value ...]` as in run_clm; flags after the file override its values
    (benchmark drivers, `rnn-lm train cfg.json --output_dir x`). `defaults` replace dataclass defaults (and show in
    `--help`) for the options neither the file nor the flags give; an action of `implied` that is not given turns on
    when one of its options is."""
    parser = transformers.HfArgumentParser(dataclass_types, formatter_class=HelpFormatter)
    parser.error = usage_error  # one line, not argparse's full usage text (136 lines) before it
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    # Piped to a file, tqdm's redraws become hundreds of lines; the logged losses (every logging_steps) remain.
    defaults = {**({} if sys.stderr.isatty() else {"disable_tqdm": True}), **(defaults or {})}
    defaults = {key: value for key, value in defaults.items() if key in known}
    argv = sys.argv[1:] if argv is None else list(argv)
    values = {}
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        values, argv = read_config_file(Path(argv[0])), argv[1:]
    options = {option[2:] for action in parser._actions for option in action.option_strings}
    check_flags([*(f"--{key}" for key in values), *argv], options)
    flags = []
    for key, value in values.items():
        if isinstance(value, list):
            flags += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            flags += [f"--{key}", json.dumps(value)]
        elif value is not None:
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    flags = [*flags, *argv]
    given = {*values, *(part[2:].partition("=")[0] for part in argv if part.startswith("--"))}
    flags, note = resolve_auto_bf16(flags, defaults, given)
    parser.set_defaults(**{key: value for key, value in defaults.items() if value != AUTO})
    if defaults.get("bf16") == AUTO:
        bf16 = next(action for action in parser._actions if "--bf16" in action.option_strings)
        bf16.help = (
            "bf16 mixed precision for the training steps: auto, true or false (default: auto, which trains in bf16 on "
            "a CPU that computes bf16 natively, in fp32 on one that emulates it or on a GPU; evaluations are fp32)"
        )
    parsed = parser.parse_args_into_dataclasses(args=flags)
    for obj in parsed:
        if isinstance(obj, RunArguments):
            obj.precision_note = note
    for action, sources in implied.items():
        if action not in given and any(getattr(obj, source, None) for obj in parsed for source in sources):
            for obj in parsed:
                if hasattr(obj, action):
                    setattr(obj, action, True)
    return tuple(parsed)


def resolve_auto_bf16(flags: list[str], defaults: dict, given: set[str]) -> tuple[list[str], str | None]:
    """`--bf16 auto` (given, or the script's default when neither --bf16 nor --fp16 is) replaced by what it means on
    this machine (`resolve_bf16`); returns the flags and the line that says what was chosen."""
    from transformers.hf_argparser import string_to_bool

    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--bf16", nargs="?", const="true", default=None)
    peek.add_argument("--use_cpu", type=string_to_bool, nargs="?", const=True, default=False)
    known, _ = peek.parse_known_args(flags)
    # Trainer's bf16 option takes true/false only: every `--bf16 auto` goes, and the last one given decides.
    kept, skip = [], False
    for i, part in enumerate(flags):
        following = flags[i + 1] if i + 1 < len(flags) else ""
        if skip:
            skip = False
        elif part == "--bf16" and following.lower() == AUTO:
            skip = True
        elif part.lower() != f"--bf16={AUTO}":
            kept.append(part)
    auto = known.bf16 is None and defaults.get("bf16") == AUTO and "fp16" not in given
    if not auto and str(known.bf16).lower() != AUTO:
        return kept, None
    options, note = resolve_bf16(known.use_cpu)
    return [*kept, *(item for key, value in options.items() for item in (f"--{key}", value))], note


def read_config_file(path: Path) -> dict:
    """A recipe's options: a JSON or YAML mapping of option names to values."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (relative to {Path.cwd()})")
    if path.suffix == ".json":
        values = json.loads(path.read_text())
    else:
        import yaml

        values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    return values


def usage_error(message: str):
    raise ValueError(f"{message}; --help lists the options")


def check_flags(argv: list[str], known: set[str]) -> None:
    """Unknown options (as flags or config-file keys) fail in one line with the nearest known name. A model config
    field given as an option (`--cell_type gru`) points to --config_overrides."""
    import difflib

    config_fields = set(RNNLMConfig().to_dict())
    for i, part in enumerate(argv):
        name, _, value = part[2:].partition("=")
        if not part.startswith("--") or name in known:
            continue
        if name in config_fields:
            value = value or (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "VALUE")
            raise ValueError(
                f"--{name} is a model config field, not an option: pass --config_overrides {name}={value} "
                "(several fields: --config_overrides 'cell_type=gru,hidden_size=256')"
            )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean --{close[0]}? " if close else ""
        raise ValueError(f"unknown option --{name}: {hint}--help lists the options")


def start_run(training_args: transformers.TrainingArguments, run_args: RunArguments) -> bool:
    """Every script's start, once its arguments are parsed: threads, logging at the Trainer's level, the seed, and
    whether to push to the Hub. Trainer's own push is turned off (it would push every checkpoint): `hub.finish_run`
    publishes once, with the card."""
    apply_run_arguments(run_args, training_args)
    if training_args.disable_tqdm:  # also the bars of tokenizing and saving
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    for library in (datasets.utils.logging, transformers.utils.logging):
        library.set_verbosity(log_level)
    if run_args.precision_note and training_args.should_log:
        logger.info(run_args.precision_note)
    transformers.set_seed(training_args.seed)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    return push_to_hub


# --------------------------------------------------------------------------------------------- the model


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from, or how to build them (the same in all three scripts)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An RNN-LM folder or Hub id to start from: a causal-LM checkpoint (in a tagger or classifier: "
            "transfer, its embeddings and recurrent layers are loaded, the head is new) or a model of the same head; "
            "its tokenizer is used. Unset: from scratch."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "From scratch: an RNNLMConfig folder or config.json (default: RNNLMConfig())."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated config fields, e.g. 'hidden_size=256,cell_type=gru,bidirectional=true'. With "
            "--model_name_or_path only non-architecture fields (dropout, classifier_dropout, classifier_pooling)."
        },
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "A saved tokenizer folder or Hub id (default: the one of --model_name_or_path)."},
    )
    tokenizer_kind: str = field(
        default="word",
        metadata={"help": f"From scratch, the tokenizer trained on the train split: one of {TOKENIZER_KINDS}."},
    )
    tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={"help": "From scratch: most tokens the tokenizer learns, not counting 4 specials (default: all)."},
    )
    min_frequency: int = field(
        default=1,
        metadata={"help": "From scratch: drop rarer types. 2 gives <unk> training examples for unseen test words."},
    )
    lowercase: bool = field(default=False, metadata={"help": "From scratch: the new tokenizer lowercases its input."})
    task_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "ULMFiT's vocabulary mapping, for a word-level LM (--model_name_or_path, or --tokenizer_name with "
            "--config_name for its random-weight control): a new word tokenizer trained on this run's training split "
            "(--tokenizer_vocab_size, --min_frequency, the LM's lowercasing), as from scratch; a word the LM knows "
            "starts from its embedding row, any other from the mean of the LM's rows."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code when loading by repo id."})
    zero_init_head: bool = field(
        default=True,
        metadata={
            "help": "With --model_name_or_path: start the new output layer (the head's linear layer, which the "
            "checkpoint lacks) at zero, as BiT "
            "does (Kolesnikov et al. 2020): predictions start uniform, and the large random gradients of a random head "
            "do not disturb the pretrained encoder in the first steps."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise checkpoint weights whose shape differs (a head with another label set)."},
    )

    def __post_init__(self):
        if self.tokenizer_kind not in TOKENIZER_KINDS:
            raise ValueError(
                f"--tokenizer_kind must be one of {', '.join(TOKENIZER_KINDS)}, got {self.tokenizer_kind!r}"
            )
        if self.config_name and self.model_name_or_path:
            raise ValueError("--config_name builds a new model: leave it out with --model_name_or_path")
        for option in ("model_name_or_path", "config_name", "tokenizer_name"):
            if getattr(self, option) is not None:  # a missing local folder fails now, not after Hub retries
                check_model_source(getattr(self, option), option)
        if self.task_vocabulary and not (self.model_name_or_path or self.tokenizer_name):
            raise ValueError(
                "--task_vocabulary maps a word-level LM's vocabulary onto this task's: pass the LM as "
                "--model_name_or_path (or as --tokenizer_name with --config_name, its random-weight control), or leave "
                "--task_vocabulary out: from scratch the vocabulary is the task's anyway"
            )


def saved_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerFast | None:
    """The tokenizer of `--tokenizer_name`, else of `--model_name_or_path`; None when neither is given."""
    source = model_args.tokenizer_name or model_args.model_name_or_path
    return AutoTokenizer.from_pretrained(source, trust_remote_code=model_args.trust_remote_code) if source else None


def get_tokenizer(model_args: ModelArguments, train_texts) -> PreTrainedTokenizerFast:
    """The tokenizer of `--tokenizer_name`/`--model_name_or_path`, or a new one trained on `train_texts` (a callable
    returning an iterable of strings, so nothing is read when a saved tokenizer is used)."""
    tokenizer = saved_tokenizer(model_args)
    kind, lowercase = model_args.tokenizer_kind, model_args.lowercase
    if tokenizer is not None:
        if not model_args.task_vocabulary:
            return tokenizer
        kind, lowercase = "word", word_tokenizer_lowercases(tokenizer, tokenizer.name_or_path)  # the LM's settings
    return train_tokenizer(
        train_texts(),
        kind=kind,
        vocab_size=model_args.tokenizer_vocab_size,
        min_frequency=model_args.min_frequency,
        lowercase=lowercase,
    )


SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def build_model(
    model_class: type[PreTrainedModel],
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerFast,
    id2label: dict[int, str] | None = None,
    config_updates: dict | None = None,
) -> PreTrainedModel:
    """A `model_class` model (with the data's labels, for a tagger or classifier): new (config defaults,
    `--config_name`, then the overrides; the vocabulary and special ids from the tokenizer), or loaded from
    `--model_name_or_path`: an LM folder (transfer into a new head) or a model of this head. `config_updates` are
    non-architecture fields a script derives from its options (they follow the overrides)."""
    path, overrides = model_args.model_name_or_path, model_args.config_overrides
    labels = {"id2label": id2label, "label2id": {label: i for i, label in id2label.items()}} if id2label else {}
    if path is None:
        config = RNNLMConfig.from_pretrained(model_args.config_name) if model_args.config_name else RNNLMConfig()
        if overrides:
            config.update_from_string(overrides)
        config.update({"vocab_size": len(tokenizer), **{name: getattr(tokenizer, name) for name in SPECIAL_IDS}})
        config.update({**labels, **(config_updates or {})})
        spellings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) if config.char_cnn_filters else None
        if spellings is not None:  # the character CNN learns the characters of this vocabulary
            config.char_vocab_size = len(spelling_table(spellings, config.max_token_chars)[1]) + 1
        config.check_architecture()
        model = model_class(config)
        if spellings is not None:
            model.base_model.set_token_spellings(spellings)
        return model

    config = RNNLMConfig.from_pretrained(path)
    if blocked := [key for key in RNNLMConfig.parse_overrides(overrides) if key in config.architecture_fields]:
        raise ValueError(
            f"--config_overrides: {', '.join(blocked)} would change the architecture of the checkpoint {path}; when "
            "loading one, override only other fields (dropout, classifier_dropout, classifier_pooling)"
        )
    if overrides:
        config.update_from_string(overrides)
    lm_tokenizer = tokenizer
    if model_args.task_vocabulary:  # `tokenizer` is the task's; the checkpoint's embeddings follow the LM's
        if config.char_cnn_filters:
            raise ValueError(
                f"--task_vocabulary: {path} spells its tokens with a character CNN, whose spellings are fixed to its "
                "vocabulary; fine-tune it with its own tokenizer (leave --task_vocabulary out)"
            )
        lm_tokenizer = saved_tokenizer(model_args)
    check_tokenizer_fits(lm_tokenizer, config, path)
    if id2label:
        check_checkpoint_labels(model_class, model_args, config, id2label, path)
    config.update({**labels, **(config_updates or {})})
    config.check_architecture()
    model, info = model_class.from_pretrained(
        path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, output_loading_info=True
    )
    if model_args.zero_init_head:
        # The new output layer only: a layer mix or CRF keeps its own initialisation (a zero mix scale with a zero
        # output layer would get no gradient at all).
        parameters = dict(model.named_parameters())
        outputs = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        for name in info["missing_keys"]:
            if name.rpartition(".")[0] in outputs:
                nn.init.zeros_(parameters[name])
    if model_args.task_vocabulary:
        shared = map_vocabulary(model, lm_tokenizer.get_vocab(), tokenizer.get_vocab())
        logger.info(
            "Task vocabulary: %d of its %d tokens start from %s's embeddings, the rest from their mean",
            shared,
            len(tokenizer),
            path,
        )
    # transformers already warns "newly initialized"; this one line says what was transferred.
    loaded = sum(1 for name, _ in model.named_parameters() if name not in info["missing_keys"])
    logger.info(
        "Loaded %d tensors from %s; new (trained from scratch): %s; unused from the checkpoint: %s",
        loaded,
        path,
        sorted(info["missing_keys"]) or "none",
        sorted(info["unexpected_keys"]) or "none",
    )
    return model


def map_vocabulary(model: PreTrainedModel, old_vocab: dict[str, int], new_vocab: dict[str, int]) -> int:
    """ULMFiT's vocabulary mapping (fastai's `convert_weights`): the input embeddings resized from `old_vocab` to
    `new_vocab` (token -> id, ids 0..n-1); a token in both keeps its row, any other starts from the mean of the old
    rows, which is what the model has learnt an ordinary word looks like. Returns the number of shared tokens."""
    embeddings = model.get_input_embeddings().weight.detach()
    rows = embeddings.mean(0).expand(len(new_vocab), -1).clone()
    shared = {new_id: old_vocab[token] for token, new_id in new_vocab.items() if token in old_vocab}
    rows[list(shared)] = embeddings[list(shared.values())]
    model.resize_token_embeddings(len(new_vocab), mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rows)
    return len(shared)


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerFast, config: RNNLMConfig, path: str) -> None:
    """The tokenizer must encode into the checkpoint's embeddings, with the special ids the checkpoint uses."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but {path} embeds {config.vocab_size}: use the tokenizer saved "
            "with the checkpoint (leave --tokenizer_name unset), or resize the model first "
            "(model.resize_token_embeddings(len(tokenizer)))"
        )
    differing = {
        name: (getattr(tokenizer, name), getattr(config, name))
        for name in SPECIAL_IDS
        if getattr(tokenizer, name) is not None and getattr(tokenizer, name) != getattr(config, name)
    }
    if differing:
        raise ValueError(
            f"the tokenizer's special ids differ from {path}'s config (tokenizer, model): {differing}; use the "
            "tokenizer saved with the checkpoint (leave --tokenizer_name unset)"
        )


def check_checkpoint_labels(model_class, model_args, config, id2label: dict[int, str], path: str) -> None:
    """A fine-tuned head of this kind: its label ids must mean the same (an LM folder's new head has none)."""
    if model_class.__name__ not in (config.architectures or []) or model_args.ignore_mismatched_sizes:
        return
    saved = [config.id2label[i] for i in sorted(config.id2label)]
    if len(saved) != len(id2label):
        raise ValueError(
            f"{path} has a head for {len(saved)} labels {saved}, but the data has {len(id2label)} "
            f"{list(id2label.values())}: pass --ignore_mismatched_sizes to start a new head, or use data with the "
            "checkpoint's labels"
        )
    if saved != list(id2label.values()):
        logger.warning("Label names change from %s (checkpoint) to %s (data), id by id", saved, id2label)
