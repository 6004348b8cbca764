"""What the tagger and classifier scripts share beyond the common scaffold (`scaffold.py`): the data-split options,
the run_ner/run_glue train-evaluate-predict sequence, and ULMFiT's stages after pretraining (Howard & Ruder 2018,
https://arxiv.org/abs/1801.06146), all off by default.

- Target-task LM fine-tuning (`--lm_adaptation_epochs`): the pretrained LM first learns the task's text (its
  training split only), then the head starts from it.

- Discriminative fine-tuning: each layer group gets its own learning rate, `lr / decay**depth` counted from the top
  (ULMFiT uses decay 2.6), because lower layers hold more general features that need less change.
- Gradual unfreezing: the first epoch trains the head only, and every later epoch unfreezes the next group down,
  to avoid catastrophic forgetting of the pretrained layers.

Layer groups, top first: head, recurrent layer N-1, ..., recurrent layer 0, embeddings. Loading a causal-LM folder
into a head (transfer) is `scaffold.build_model`.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from rnn_lm_hf import RNNLMConfig
from rnn_lm_hf.hub import model_task
from rnn_lm_hf.run_info import command_line
from rnn_lm_hf.trainer import FP32Evaluation, RNNLMTrainingArguments
from rnn_lm_hf.training.scaffold import (
    CLM_DEFAULTS,
    FINETUNE_DEFAULTS,
    ModelArguments,
    RunArguments,
    parse_script_args,
    start_run,
)


logger = logging.getLogger(__name__)


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

    lm_adaptation_epochs: float = field(
        default=0.0,
        metadata={
            "help": "ULMFiT's target-task LM fine-tuning: first train the --model_name_or_path language model on this "
            "run's training texts (each fold's in cross-validation; never validation or test texts) for this many "
            "epochs, then start the head from it (saved in <output_dir>/adapted_lm). 0: off."
        },
    )
    lm_adaptation_block_size: int = field(
        default=70, metadata={"help": "Tokens per training block of the LM fine-tuning (shuffled blocks)."}
    )
    lm_adaptation_learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "Peak learning rate of the LM fine-tuning (AdamW, cosine schedule, warmup over the first tenth of the steps)."
        },
    )
    freeze_encoder: bool = field(
        default=False,
        metadata={
            "help": "ELMo's feature-based use (Peters et al. 2018): the encoder (embeddings and recurrent layers, a "
            "pretrained LM's) stays fixed and only the head trains: layer mix, head RNN (config head_rnn_size), "
            "output layer, CRF. Cheaper per step, and the pretrained features cannot be forgotten."
        },
    )

    def __post_init__(self):
        if self.freeze_encoder and self.gradual_unfreezing:
            raise ValueError("--freeze_encoder keeps the encoder fixed, --gradual_unfreezing unfreezes it: pick one")
        if self.lm_adaptation_epochs < 0:
            raise ValueError(f"--lm_adaptation_epochs must be >= 0 (0: off), got {self.lm_adaptation_epochs}")
        if self.layerwise_lr_decay is not None and self.layerwise_lr_decay <= 0:
            raise ValueError(f"--layerwise_lr_decay must be > 0 (ULMFiT: 2.6), got {self.layerwise_lr_decay}")


def parse_finetuning_args(data_arguments: type, argv: list[str] | None) -> tuple:
    """The tagger and classifier scripts' (model, data, transfer, training, run) arguments, parsed with
    `FINETUNE_DEFAULTS` from `argv` (a recipe file first, then flags)."""
    dataclass_types = (ModelArguments, data_arguments, TransferArguments, TrainingArguments, RunArguments)
    return parse_script_args(dataclass_types, argv, FINETUNE_DEFAULTS)


def start_finetuning(data_arguments: type, argv: list[str] | None) -> tuple:
    """The tagger and classifier scripts' start: `parse_finetuning_args`, then `scaffold.start_run`; the last item
    is whether to push to the Hub."""
    arguments = parse_finetuning_args(data_arguments, argv)
    return (*arguments, start_run(arguments[3], arguments[4]))


def adapt_language_model(
    texts: list[str],
    validation_texts: list[str] | None,
    model_args: ModelArguments,
    transfer_args: TransferArguments,
    training_args: TrainingArguments,
) -> ModelArguments:
    """ULMFiT's second stage (3.2): the causal LM of --model_name_or_path fine-tuned on `texts` by `train_clm.py`
    (shuffled blocks, a bidirectional LM's two directions alike), saved in <output_dir>/adapted_lm with its
    perplexity on `validation_texts` (when given); returns the model arguments that start the head from it. A
    finished adaptation there is reused (a resumed run)."""
    from rnn_lm_hf.training import train_clm  # the sibling script does the LM training; only this option needs it

    path = model_args.model_name_or_path
    if path is None or model_task(path) != "causal-lm":
        raise ValueError(
            f"--lm_adaptation_epochs fine-tunes a language model, but --model_name_or_path {path} is not one: pass a "
            "causal-LM folder (train_clm.py's output), or --lm_adaptation_epochs 0"
        )
    folder = Path(training_args.output_dir) / "adapted_lm"
    if not (folder / "run_info.json").is_file():  # written last, so its presence means the adaptation finished
        files = {"train": texts, "validation": validation_texts}
        with training_args.main_process_first(desc="writing the texts for LM fine-tuning"):
            folder.mkdir(parents=True, exist_ok=True)
            for split, lines in files.items():  # one text per line, as train_clm.py reads them
                if lines:
                    text = "".join(" ".join(line.split()) + "\n" for line in lines)
                    (folder / f"{split}.txt").write_text(text, encoding="utf-8")
        lm_args = ModelArguments(model_name_or_path=path, tokenizer_name=model_args.tokenizer_name)
        data_args = train_clm.DataArguments(
            train_file=str(folder / "train.txt"),
            validation_file=str(folder / "validation.txt") if validation_texts else None,
            validation_split_percentage=0,
            block_size=transfer_args.lm_adaptation_block_size,
            stateful=False,  # shuffled blocks: a bidirectional LM's two directions alike
            num_samples=0,
        )
        lm_training_args = RNNLMTrainingArguments(
            output_dir=str(folder),
            do_train=True,
            num_train_epochs=transfer_args.lm_adaptation_epochs,
            per_device_train_batch_size=32,
            optim="adamw_torch",
            learning_rate=transfer_args.lm_adaptation_learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.1,
            weight_decay=0.01,
            max_grad_norm=0.25,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=CLM_DEFAULTS["logging_steps"],
            seed=training_args.seed,
            report_to="none",
            use_cpu=training_args.use_cpu,
            bf16=training_args.bf16,  # the precision the tagger's or classifier's own run resolved
            disable_tqdm=training_args.disable_tqdm,
        )
        logger.info(
            "ULMFiT target-task LM fine-tuning: %d texts, %s epochs", len(texts), transfer_args.lm_adaptation_epochs
        )
        # Recorded as the command that re-runs it: this stage runs inside the tagger's or classifier's own command.
        train_clm.train(lm_args, data_args, lm_training_args, RunArguments(), command=command_line())
    return dataclasses.replace(model_args, model_name_or_path=str(folder), tokenizer_name=None)


def checkpoint_labels(model_args: ModelArguments, head: str) -> list[str]:
    """Evaluation only (no --train_file): the label names stored in the fine-tuned checkpoint, in id order."""
    if model_args.model_name_or_path is None:
        raise ValueError(f"without --train_file, pass a fine-tuned {head} as --model_name_or_path")
    id2label = RNNLMConfig.from_pretrained(model_args.model_name_or_path).id2label
    return [id2label[i] for i in range(len(id2label))]


def layer_groups(model: PreTrainedModel) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(group name, named parameters) of a head model, top first: head, layer N-1, ..., layer 0, embeddings."""
    prefix = "" if model is model.base_model else model.base_model_prefix + "."
    num_layers = model.config.num_hidden_layers
    groups: dict[str, list] = {"head": [], **{f"layer_{i}": [] for i in reversed(range(num_layers))}, "embeddings": []}
    for name, param in model.named_parameters():
        # A backward LM's layer i (`reverse_layers`) joins the forward one's group; the character CNN the embeddings'.
        stack = next((s for s in ("layers.", "reverse_layers.") if name.startswith(prefix + s)), None)
        if stack is not None:
            groups[f"layer_{name[len(prefix) + len(stack) :].split('.')[0]}"].append((name, param))
        elif name.startswith(prefix):  # the embeddings, the character CNN
            groups["embeddings"].append((name, param))
        else:  # the head: classifier / score, layer mix, head RNN, CRF
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


class TransferTrainer(FP32Evaluation, Trainer):
    """`Trainer` plus ULMFiT's discriminative learning rates and gradual unfreezing (both off by default)."""

    def __init__(self, *args, transfer_args: TransferArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.transfer_args = transfer_args or TransferArguments()
        if self.transfer_args.gradual_unfreezing:
            self.add_callback(GradualUnfreezingCallback(self.model))
        if self.transfer_args.freeze_encoder:
            for _, named in layer_groups(self.model)[1:]:
                for _, param in named:
                    param.requires_grad_(False)

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
