"""What the fine-tuning scripts share: argument parsing, model arguments, the tokenizer, a tagging/classification head
built from scratch or from a causal-LM checkpoint, and ULMFiT's two fine-tuning tricks (Howard & Ruder 2018,
https://arxiv.org/abs/1801.06146).

- Transfer: `from_pretrained` of an LM folder into a head class loads the embeddings and recurrent layers (the shared
  `model.*` weights) and initialises the new head; `lm_head`/`projection` are left unused.
- Discriminative fine-tuning: each layer group gets its own learning rate, `lr / decay**depth` counted from the top
  (ULMFiT uses decay 2.6), because lower layers hold more general features that need less change.
- Gradual unfreezing: the first epoch trains the head only, and every later epoch unfreezes the next group down,
  to avoid catastrophic forgetting of the pretrained layers.

Layer groups, top first: head, recurrent layer N-1, ..., recurrent layer 0, embeddings.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import transformers
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerFast, Trainer, TrainerCallback, TrainingArguments

from rnn_lm_hf import RNNLMConfig
from rnn_lm_hf.cli import FINETUNE_DEFAULTS, RunArguments, apply_run_arguments
from rnn_lm_hf.cli import parse_script_args as parse_args  # noqa: F401 (the scripts' shared parser)
from rnn_lm_hf.hub import check_model_source
from rnn_lm_hf.tokenization import TOKENIZER_KINDS, load_tokenizer, train_tokenizer


logger = logging.getLogger(__name__)

# Fields that shape or define the pretrained weights: overriding them would silently break the transfer.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "embedding_size",
    "num_hidden_layers",
    "cell_type",
    "rnn_nonlinearity",
    "bidirectional",
    "output_projection",
)


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune, or how to build them from scratch (the same in both scripts)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An RNN-LM folder to start from: a causal-LM checkpoint (transfer: its embeddings and recurrent "
            "layers are loaded, the head is new) or a fine-tuned head; its tokenizer is used. Unset: from scratch."
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
        default=None, metadata={"help": "A saved tokenizer folder (default: the one in --model_name_or_path)."}
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
    zero_init_head: bool = field(
        default=True,
        metadata={
            "help": "With --model_name_or_path: start the weights the checkpoint lacks (the new head) at zero, as BiT "
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
            if getattr(self, option) is not None:
                check_model_source(getattr(self, option), option)


@dataclass
class SplitArguments:
    """The data options both scripts share: one file (or folder) per split, and how much of each to use."""

    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data: CoNLL/CoNLL-U (taggers); .tsv/.csv/.jsonl/stsa.binary.* or a class folder."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data (same format)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data (same format), scored by --do_predict."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Name recorded in run_info.json and the model card (files are read locally)."}
    )
    encoding: str = field(default="utf-8", metadata={"help": "Encoding of the data files (rt-polarity: latin-1)."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Truncate longer examples (in tokens); the RNN itself has no length limit."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})

    @property
    def data_files(self) -> dict[str, str]:
        """{split: path} for the splits given."""
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in files.items() if path}

    def select_samples(self, raw):
        """`raw` (a DatasetDict) cut to --max_{train,eval,predict}_samples, in place; returned for chaining."""
        limits = {
            "train": self.max_train_samples,
            "validation": self.max_eval_samples,
            "test": self.max_predict_samples,
        }
        for split, limit in limits.items():
            if split in raw and limit is not None:
                raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
        return raw


@dataclass
class TransferArguments:
    """ULMFiT fine-tuning options; both default to off (plain fine-tuning of every weight at one learning rate)."""

    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Discriminative learning rates: the layer group at depth d from the top (head 0, last recurrent "
            "layer 1, ..., embeddings N+1) gets learning_rate / decay**d. ULMFiT uses 2.6. Off when unset."
        },
    )
    gradual_unfreezing: bool = field(
        default=False,
        metadata={
            "help": "Train only the head in epoch 1, then unfreeze one more layer group from the top every epoch "
            "(ULMFiT). Needs num_train_epochs >= number of layer groups to reach the embeddings."
        },
    )

    def __post_init__(self):
        if self.layerwise_lr_decay is not None and self.layerwise_lr_decay <= 0:
            raise ValueError(f"--layerwise_lr_decay must be > 0 (ULMFiT: 2.6), got {self.layerwise_lr_decay}")


def start_run(data_arguments: type, argv: list[str] | None) -> tuple:
    """Both scripts' start: (model, data, transfer, training, run) arguments with `FINETUNE_DEFAULTS`, threads,
    logging, and whether to push to the Hub. Trainer's own push is turned off (it would push every checkpoint):
    `hub.finish_run` publishes once, with the card."""
    model_args, data_args, transfer_args, training_args, run_args = parse_args(
        (ModelArguments, data_arguments, TransferArguments, TrainingArguments, RunArguments), argv, FINETUNE_DEFAULTS
    )
    apply_run_arguments(run_args, training_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    return model_args, data_args, transfer_args, training_args, run_args, push_to_hub


def checkpoint_labels(model_args: ModelArguments, head: str) -> list[str]:
    """Evaluation only (no --train_file): the label names stored in the fine-tuned checkpoint, in id order."""
    if model_args.model_name_or_path is None:
        raise ValueError(f"without --train_file, pass a fine-tuned {head} as --model_name_or_path")
    id2label = RNNLMConfig.from_pretrained(model_args.model_name_or_path).id2label
    return [id2label[i] for i in range(len(id2label))]


def apply_config_overrides(config: RNNLMConfig, overrides: str | None) -> None:
    """`--config_overrides` on a config (RNNLMConfig.update_from_string also sets None-default fields, validates)."""
    if overrides:
        config.update_from_string(overrides)


def get_tokenizer(model_args: ModelArguments, train_texts) -> PreTrainedTokenizerFast:
    """The tokenizer of `--tokenizer_name`/`--model_name_or_path`, or a new one trained on `train_texts` (a callable
    returning an iterable of strings, so nothing is read when a saved tokenizer is used)."""
    source = model_args.tokenizer_name or model_args.model_name_or_path
    if source:
        return load_tokenizer(source)
    return train_tokenizer(
        train_texts(),
        kind=model_args.tokenizer_kind,
        vocab_size=model_args.tokenizer_vocab_size,
        min_frequency=model_args.min_frequency,
        lowercase=model_args.lowercase,
    )


def build_model(
    model_class: type[PreTrainedModel],
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerFast,
    id2label: dict[int, str],
) -> PreTrainedModel:
    """A head of `model_class` with the data's labels: new (config defaults, `--config_name`, then overrides; the
    vocabulary from the tokenizer), or loaded from `--model_name_or_path`, an LM folder (transfer) or a head."""
    model_name_or_path, config_overrides = model_args.model_name_or_path, model_args.config_overrides
    label2id = {label: i for i, label in id2label.items()}
    if model_name_or_path is None:
        config = RNNLMConfig.from_pretrained(model_args.config_name) if model_args.config_name else RNNLMConfig()
        apply_config_overrides(config, config_overrides)
        config.vocab_size = len(tokenizer)
        config.id2label, config.label2id = id2label, label2id
        config.check_architecture()
        return model_class(config)

    config = RNNLMConfig.from_pretrained(model_name_or_path)
    changed = [key.split("=")[0].strip() for key in (config_overrides or "").split(",") if key.strip()]
    if blocked := [key for key in changed if key in ARCHITECTURE_FIELDS]:
        raise ValueError(
            f"--config_overrides: {', '.join(blocked)} would change the architecture of the checkpoint "
            f"{model_name_or_path}; when loading one, override only other fields (dropout, classifier_dropout, "
            "classifier_pooling)"
        )
    apply_config_overrides(config, config_overrides)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but {model_name_or_path} embeds {config.vocab_size}; use the "
            "tokenizer saved with the checkpoint (leave --tokenizer_name unset)"
        )
    saved = [config.id2label[i] for i in sorted(config.id2label)]
    if model_class.__name__ in (config.architectures or []) and not model_args.ignore_mismatched_sizes:
        # A fine-tuned head of this kind: its label ids must mean the same (an LM folder's new head has none).
        if len(saved) != len(id2label):
            raise ValueError(
                f"{model_name_or_path} has a head for {len(saved)} labels {saved}, but the data has {len(id2label)} "
                f"{list(id2label.values())}: pass --ignore_mismatched_sizes to start a new head, or use data with "
                "the checkpoint's labels"
            )
        if saved != list(id2label.values()):
            logger.warning("Label names change from %s (checkpoint) to %s (data), id by id", saved, id2label)
    config.id2label, config.label2id = id2label, label2id
    model, info = model_class.from_pretrained(
        model_name_or_path,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        output_loading_info=True,
    )
    if model_args.zero_init_head:
        parameters = dict(model.named_parameters())
        for name in info["missing_keys"]:
            nn.init.zeros_(parameters[name])
    # transformers already warns "newly initialized"; this one line says what was transferred.
    loaded = sum(1 for name, _ in model.named_parameters() if name not in info["missing_keys"])
    logger.info(
        "Loaded %d tensors from %s; new (trained from scratch): %s; unused from the checkpoint: %s",
        loaded,
        model_name_or_path,
        sorted(info["missing_keys"]) or "none",
        sorted(info["unexpected_keys"]) or "none",
    )
    return model


def layer_groups(model: PreTrainedModel) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(group name, named parameters) of a head model, top first: head, layer N-1, ..., layer 0, embeddings."""
    prefix = "" if model is model.base_model else model.base_model_prefix + "."
    num_layers = model.config.num_hidden_layers
    groups: dict[str, list] = {"head": [], **{f"layer_{i}": [] for i in reversed(range(num_layers))}, "embeddings": []}
    for name, param in model.named_parameters():
        if name.startswith(prefix + "embeddings."):
            groups["embeddings"].append((name, param))
        elif name.startswith(prefix + "layers."):
            groups[f"layer_{name[len(prefix) + len('layers.') :].split('.')[0]}"].append((name, param))
        else:  # classifier / score (and anything else outside the encoder)
            groups["head"].append((name, param))
    return list(groups.items())


def discriminative_param_groups(
    model: PreTrainedModel,
    learning_rate: float,
    decay: float,
    weight_decay: float = 0.0,
    decay_parameter_names: list[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups with lr = learning_rate / decay**depth, split by weight decay as Trainer does.

    Every parameter is included, frozen or not, so gradual unfreezing can turn them on later (a parameter without a
    gradient is skipped by the optimizer step).
    """
    decay_names = set(decay_parameter_names if decay_parameter_names is not None else [])
    param_groups = []
    for depth, (group_name, named) in enumerate(layer_groups(model)):
        for decayed in (True, False):
            params = [param for name, param in named if (name in decay_names) == decayed]
            if params:
                param_groups.append(
                    {
                        "params": params,
                        "lr": learning_rate / decay**depth,
                        "weight_decay": weight_decay if decayed else 0.0,
                        "group_name": group_name,
                    }
                )
    return param_groups


class GradualUnfreezingCallback(TrainerCallback):
    """At the start of epoch k (0-based) only the top k+1 layer groups are trainable; all are again at the end."""

    def __init__(self, model: PreTrainedModel):
        self.groups = layer_groups(model)

    def set_trainable(self, num_groups: int) -> None:
        for depth, (_, named) in enumerate(self.groups):
            for _, param in named:
                param.requires_grad_(depth < num_groups)

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        self.set_trainable(min(epoch + 1, len(self.groups)))
        logger.info("Gradual unfreezing, epoch %d: training %s", epoch + 1, [n for n, _ in self.groups[: epoch + 1]])

    def on_train_end(self, args, state, control, **kwargs):
        self.set_trainable(len(self.groups))


class TransferTrainer(Trainer):
    """`Trainer` plus ULMFiT's discriminative learning rates and gradual unfreezing (both off by default)."""

    def __init__(self, *args, transfer_args: TransferArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.transfer_args = transfer_args or TransferArguments()
        if self.transfer_args.gradual_unfreezing:
            self.add_callback(GradualUnfreezingCallback(self.model))

    def create_optimizer(self, model=None):
        if self.optimizer is not None or self.transfer_args.layerwise_lr_decay is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        param_groups = discriminative_param_groups(
            opt_model,
            learning_rate=self.args.learning_rate,
            decay=self.transfer_args.layerwise_lr_decay,
            weight_decay=self.args.weight_decay,
            decay_parameter_names=self.get_decay_parameter_names(opt_model),
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


def train_evaluate_predict(trainer, training_args, test_dataset=None) -> tuple[dict[str, float], object | None]:
    """The run_ner/run_glue sequence: train (model and tokenizer saved), evaluate, predict on `test_dataset`; each
    split's metrics logged and saved. Returns the float metrics and the prediction output (None without predict)."""
    metrics, output = {}, None
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()  # the tokenizer is saved beside it (processing_class)
        trainer.save_state()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.do_predict:
        output = trainer.predict(test_dataset, metric_key_prefix="test")
        trainer.log_metrics("test", output.metrics)
        trainer.save_metrics("test", output.metrics)
        metrics.update(output.metrics)
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float, np.number))}, output
