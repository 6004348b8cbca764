"""`Trainer` for recurrent LMs: stateful truncated BPTT, token-weighted perplexity, epoch-wise LR decay, safe resume.

Stateful truncated BPTT (Zaremba et al. 2014; pytorch/examples word_language_model's `repackage_hidden`): the
training split is a `StreamSegments` dataset whose sequential batches continue B parallel streams. The final hidden
state of each batch is detached (the cache stores detached states) and carried into the next batch, so gradients
flow through `bptt` steps while the state sees the whole stream; it is reset at each epoch start (`segment_id == 0`).
Each process owns its own streams (see `StreamSegments`), so this works with gradient accumulation and under DDP.
"""

import csv
import logging
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import MethodType

import evaluate
import torch
from accelerate.utils.operations import ConvertOutputsToFp32
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .data import StreamSegments
from .metrics import metric_path
from .modeling_rnn_lm import CACHE_FIELD, IGNORE_INDEX, RNNLMCache, RNNLMForCausalLM
from .nt_asgd import NTASGDCallback


try:  # a function in recent transformers; a Trainer method (reading args.save_total_limit) in older 5.x releases
    from transformers.trainer_utils import rotate_checkpoints
except ImportError:
    rotate_checkpoints = None

logger = logging.getLogger(__name__)
STATE_FILE = "rnn_state_{process}.pt"
NT_ASGD_FILE = "nt_asgd.pt"
# Written last into a checkpoint folder: a folder without it was cut short by a kill and is never resumed from.
COMPLETE_MARKER = "checkpoint_complete"
TIME_SCHEDULE_STEPS = 10_000  # the resolution of a schedule run over a time budget (`--lr_schedule_over_time`)
STREAM_KEYS = ("stream_id", "segment_id")


@dataclass
class RNNLMTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus Zaremba et al.'s epoch-wise decay and AWD-LSTM's optimisation knobs (Merity et al.
    2018); all off by default."""

    lr_decay: float | None = field(
        default=None, metadata={"help": "Multiply the learning rate by this at each epoch from lr_decay_start_epoch."}
    )
    lr_decay_start_epoch: int = field(
        default=1, metadata={"help": "Epochs at the initial learning rate (Zaremba: 4)."}
    )
    lr_schedule_over_time: bool = field(
        default=False,
        metadata={
            "help": "With --max_train_minutes: run the --lr_scheduler_type schedule (and its warmup) over the time "
            "budget, by the fraction of it elapsed, instead of over num_train_epochs' steps, which a time budget "
            "cuts short at an unknown step (linear: the learning rate reaches 0 as the budget ends)."
        },
    )

    activation_regularization: float = field(
        default=0.0,
        metadata={"help": "AR: alpha * mean(h^2) of the last layer's dropped output, added in training (AWD: 2)."},
    )
    temporal_activation_regularization: float = field(
        default=0.0,
        metadata={"help": "TAR: beta * mean((h_t - h_{t-1})^2) of the last layer's raw output (AWD: 1)."},
    )
    state_reset_probability: float = field(
        default=0.0,
        metadata={
            "help": "Stateful training: reset each row's carried state to zero with this probability per batch, so the "
            "model also learns to start from a fresh state, as generation from a short prompt does."
        },
    )
    nt_asgd: bool = field(
        default=False,
        metadata={"help": "NT-ASGD: average the weights once validation stalls for nt_asgd_nonmono checks."},
    )
    nt_asgd_nonmono: int = field(default=5, metadata={"help": "NT-ASGD's non-monotone interval n (AWD: 5)."})
    nt_asgd_start_minutes: float | None = field(
        default=None,
        metadata={"help": "With --nt_asgd: start averaging after this many training minutes at the latest (budgets)."},
    )
    nt_asgd_finetune: bool = field(
        default=False,
        metadata={"help": "AWD's finetune stage: average from the first step, stop when validation stalls."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            raise ValueError(f"--lr_decay must be in (0, 1], got {self.lr_decay}.")
        if self.lr_decay is not None and self.lr_schedule_over_time:
            raise ValueError("--lr_decay and --lr_schedule_over_time are two schedules: choose one.")
        for name in ("activation_regularization", "temporal_activation_regularization"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 <= self.state_reset_probability <= 1:
            raise ValueError(f"--state_reset_probability must be in [0, 1], got {self.state_reset_probability}.")
        if (self.nt_asgd or self.nt_asgd_finetune) and self.eval_strategy == "no":
            raise ValueError("--nt_asgd/--nt_asgd_finetune watch the validation loss: set --eval_strategy epoch.")


@contextmanager
def full_precision(model: torch.nn.Module, args: TrainingArguments | None = None):
    """fp32 arithmetic for `model`'s calls in this block. For mixed-precision training (`--bf16`) accelerate wraps the
    model's forward in autocast, as an instance attribute; the block calls the original forward (the weights are fp32
    throughout), so evaluations and reported metrics are fp32. `--bf16_full_eval`/`--fp16_full_eval` keep the wrapper."""
    original = model.__dict__.get("_original_forward")
    asked = args is not None and (args.bf16_full_eval or args.fp16_full_eval)
    if original is None or asked:
        yield model
        return
    wrapped, model.forward = model.forward, original
    try:
        yield model
    finally:
        model.forward = wrapped


def remove_autocast(model: torch.nn.Module) -> None:
    """Undo accelerate's mixed-precision wrapper once training ends: the trained model then behaves as built (fp32
    `generate`, scores, saving), wherever the user takes it."""
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__func__", None) is type(model).forward:
        model.__dict__.pop("forward", None)  # the class's own forward again
    else:
        model.forward = original


def keep_autocast_outputs(model: torch.nn.Module) -> None:
    """Drop the fp32 conversion from accelerate's mixed-precision wrapper, keeping its autocast. It copies every bf16
    output to fp32, which for a training step is a (batch, seq_len, vocab) copy of the logits that nothing reads (the
    LM losses are fp32 already): 5-8% of a 2x200 bf16 step on a CPU. Evaluation calls the original forward anyway."""
    wrapper = getattr(model.__dict__.get("forward"), "__func__", None)
    convert = getattr(wrapper, "__wrapped__", wrapper)  # accelerate's decorator function around the converter
    if isinstance(convert, ConvertOutputsToFp32):
        model.forward = MethodType(convert.model_forward, model)


class FP32Evaluation:
    """Trainer mixin: mixed precision (`--bf16`) for the training steps only. Evaluations and predictions run in fp32,
    and the trained model computes in fp32 again once `train` returns."""

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            remove_autocast(self.model)

    def evaluate(self, *args, **kwargs):
        with full_precision(self.model, self.args):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with full_precision(self.model, self.args):
            return super().predict(*args, **kwargs)


class CarriedState:
    """The hidden state carried between consecutive batches of the same streams, with continuity checks."""

    def __init__(self):
        self.cache: RNNLMCache | None = None
        self.stream_ids: torch.Tensor | None = None
        self.next_segment: int = 0

    def take(self, stream_ids: torch.Tensor, segment_ids: torch.Tensor) -> RNNLMCache | None:
        """The cache to continue from for this batch, or None at a stream start."""
        segment = int(segment_ids[0])
        if segment == 0:
            self.cache = None
        elif self.cache is not None and (
            segment != self.next_segment or not torch.equal(stream_ids.cpu(), self.stream_ids)
        ):
            raise RuntimeError(
                f"Stateful batches out of order: got segment {segment} of streams {stream_ids.tolist()}, expected "
                f"segment {self.next_segment} of {self.stream_ids.tolist()}. Keep the sequential sampler and "
                "per-process batch size the StreamSegments dataset was built with."
            )
        self.stream_ids, self.next_segment = stream_ids.cpu(), segment + 1
        return self.cache

    def states(self) -> list[torch.Tensor] | None:
        if self.cache is None:
            return None
        return [layer.recurrent_states[0].cpu() for layer in self.cache.layers]

    def state_dict(self) -> dict:
        return {"states": self.states(), "stream_ids": self.stream_ids, "next_segment": self.next_segment}

    def load_state_dict(self, saved: dict, config, device: torch.device) -> None:
        self.stream_ids, self.next_segment = saved["stream_ids"], saved["next_segment"]
        self.cache = None
        if saved["states"] is not None:
            self.cache = RNNLMCache(config)
            for layer, state in zip(self.cache.layers, saved["states"]):
                layer.update_recurrent_state(state.to(device), 0)
                layer.has_previous_state[0] = True


class CSVLogCallback(TrainerCallback):
    """Every logged value as a row `step,epoch,name,value` (long format: the columns never change mid-run), plus an
    `elapsed_s` row per log: wall seconds since this process began training, for curves against time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["step", "epoch", "name", "value"])
            for name, value in {**logs, "elapsed_s": round(time.monotonic() - self.start, 2)}.items():
                if isinstance(value, (int, float)):
                    writer.writerow([state.global_step, state.epoch, name, value])


class TimeBudgetCallback(TrainerCallback):
    """Ends training after `minutes` of wall time, with a checkpoint and an evaluation, as if the epochs had run out
    (a GPU lease or a job slot with a hard limit). The learning-rate schedule follows the budget only with
    `--lr_schedule_over_time`. A resumed run gets the whole budget again."""

    def __init__(self, minutes: float):
        self.seconds, self.start = 60 * minutes, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def fraction(self) -> float:
        """The part of the budget spent, 0 before training starts, at most 1."""
        return 0.0 if self.start is None else min(1.0, (time.monotonic() - self.start) / self.seconds)

    def on_step_end(self, args, state, control, **kwargs):
        if self.fraction() >= 1 and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
            control.should_evaluate = args.eval_strategy != "no"


def epoch_decay_lambda(steps_per_epoch: int, decay: float, start_epoch: int):
    """Zaremba et al.'s schedule: the learning rate stays for `start_epoch` epochs, then is multiplied by `decay` at
    every epoch start (lr of 0-based epoch e = lr * decay ** max(0, e + 1 - start_epoch))."""

    def factor(step: int) -> float:
        return decay ** max(0, step // steps_per_epoch + 1 - start_epoch)

    return factor


def time_schedule(args: TrainingArguments, optimizer, budget: TimeBudgetCallback) -> torch.optim.lr_scheduler.LambdaLR:
    """`args.lr_scheduler_type`'s schedule with the elapsed fraction of `budget` as its progress: transformers'
    schedule over TIME_SCHEDULE_STEPS virtual steps, read at the step the elapsed fraction reaches."""
    schedule = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(TIME_SCHEDULE_STEPS),
        num_training_steps=TIME_SCHEDULE_STEPS,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):
        raise ValueError(
            f"--lr_schedule_over_time needs a schedule of the step count, not {args.lr_scheduler_type!r}: "
            "use linear, cosine, polynomial, constant_with_warmup, ..."
        )
    by_step = schedule.lr_lambdas

    def factor(group: int):
        return lambda _: by_step[group](round(budget.fraction() * TIME_SCHEDULE_STEPS))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(group) for group in range(len(by_step))])


class RNNLMTrainer(FP32Evaluation, Trainer):
    """`Trainer` that carries the recurrent state across batches of a `StreamSegments` split and evaluates
    perplexity token-weighted over the whole split (the way published PTB/WikiText numbers are computed), in fp32."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.carried = {"train": CarriedState(), "eval": CarriedState()}
        self.perplexity_metric = evaluate.load(metric_path("perplexity"), keep_in_memory=True)
        self.ar_alpha = getattr(self.args, "activation_regularization", 0.0)
        self.tar_beta = getattr(self.args, "temporal_activation_regularization", 0.0)
        self.loss_parts: dict[str, float] = {}  # summed since the last log: the cross-entropy apart from AR/TAR
        self.nt_asgd = None
        if getattr(self.args, "nt_asgd", False) or getattr(self.args, "nt_asgd_finetune", False):
            self.nt_asgd = NTASGDCallback(
                self.args.nt_asgd_nonmono,
                average_from_start=self.args.nt_asgd_finetune,
                start_after_minutes=self.args.nt_asgd_start_minutes,
            )
            self.add_callback(self.nt_asgd)

    # ----- data order -----
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, StreamSegments):
            check_layout(
                dataset, self.args.per_device_train_batch_size, self.args.world_size, "per_device_train_batch_size"
            )
            return SequentialSampler(dataset)  # the layout IS the order; shuffling would break the streams
        return super()._get_train_sampler(train_dataset) if train_dataset is not None else super()._get_train_sampler()

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and getattr(self.args, "lr_schedule_over_time", False):
            budget = next((c for c in self.callback_handler.callbacks if isinstance(c, TimeBudgetCallback)), None)
            if budget is None:
                raise ValueError(
                    "--lr_schedule_over_time runs the schedule over the time budget: set --max_train_minutes."
                )
            self.lr_scheduler = time_schedule(self.args, optimizer or self.optimizer, budget)
            return self.lr_scheduler
        lr_decay = getattr(self.args, "lr_decay", None)  # plain TrainingArguments have no epoch-wise decay
        if lr_decay is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        accumulation = self.args.gradient_accumulation_steps
        steps_per_epoch = max(1, math.ceil(len(self.get_train_dataloader()) / accumulation))
        factor = epoch_decay_lambda(steps_per_epoch, lr_decay, self.args.lr_decay_start_epoch)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    # ----- training -----
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stateful = "segment_id" in inputs
        if stateful:
            stream_ids, segment_ids = (inputs.pop(key) for key in STREAM_KEYS)
            carried = self.carried["train" if model.training else "eval"]
            cache = carried.take(stream_ids, segment_ids)
            if model.training and cache is not None:
                self.reset_some_states(cache, len(stream_ids))
            inputs = {**inputs, "cache": cache, "use_cache": True}
            if "attention_mask" in inputs and bool(inputs["attention_mask"].all()):
                del inputs["attention_mask"]  # unpadded (all but a stream's last window): no graph break on it
        regularize = model.training and (self.ar_alpha > 0 or self.tar_beta > 0)
        if regularize:
            inputs = {**inputs, "output_hidden_states": True}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if stateful:
            carried.cache = getattr(outputs, CACHE_FIELD)  # the model stores detached states
        if regularize:
            loss = loss + self.activation_penalties(outputs, inputs.get("attention_mask"), loss.detach())
        return (loss, outputs) if return_outputs else loss

    def reset_some_states(self, cache: RNNLMCache, batch_size: int) -> None:
        """Zero the carried state of random rows (`state_reset_probability`): fresh starts seen in training."""
        p = getattr(self.args, "state_reset_probability", 0.0)
        if p == 0:
            return
        reset = torch.rand(batch_size) < p  # (batch,) on the CPU: the draw is the same on every device
        if reset.any():
            for layer in cache.layers:
                layer.recurrent_states[0][reset.to(layer.recurrent_states[0].device)] = 0.0

    def activation_penalties(self, outputs, attention_mask: torch.Tensor | None, ce: torch.Tensor) -> torch.Tensor:
        """AR + TAR (Merity et al. 2018, 4.6) over the real positions, per micro-batch, logged apart from the CE."""
        # (batch, seq_len, output_size) each; in fp32, as under bf16 autocast they come out bf16
        dropped, raw = outputs.last_hidden_state.float(), outputs.hidden_states[-1].float()
        real = torch.ones(dropped.shape[:2], device=dropped.device) if attention_mask is None else attention_mask
        real = real.to(dropped.dtype)
        pairs = real[:, 1:] * real[:, :-1]  # TAR compares neighbours that are both real
        width = dropped.shape[-1]
        ar = self.ar_alpha * (dropped.pow(2).sum(-1) * real).sum() / (real.sum() * width).clamp(min=1)
        step = (raw[:, 1:] - raw[:, :-1]).pow(2).sum(-1)
        tar = self.tar_beta * (step * pairs).sum() / (pairs.sum() * width).clamp(min=1)
        for name, value in (("loss_ce", ce), ("loss_ar", ar.detach()), ("loss_tar", tar.detach())):
            self.loss_parts[name] = self.loss_parts.get(name, 0.0) + float(value)
        self.loss_parts["parts_count"] = self.loss_parts.get("parts_count", 0) + 1
        # The CE is already divided for gradient accumulation (num_items_in_batch); these means are per micro-batch.
        return (ar + tar) / self.args.gradient_accumulation_steps

    def training_step(self, model, inputs, num_items_in_batch=None):
        keep_autocast_outputs(self.model)  # once accelerate has wrapped it; a no-op after
        dataset = self.train_dataset
        if getattr(dataset, "variable_bptt", False) and self.lr_scheduler is not None:
            # AWD-LSTM scales the step size with the window length, so short windows don't weigh as much as long ones.
            scale = inputs["input_ids"].shape[1] / dataset.bptt
            for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr()):
                group["lr"] = lr * scale
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self.loss_parts:
            count = self.loss_parts.pop("parts_count")
            logs.update({name: round(value / count, 4) for name, value in self.loss_parts.items()})
            self.loss_parts = {}
        super().log(logs, *args, **kwargs)

    def train(self, *args, **kwargs):
        """After training with NT-ASGD the model keeps the averaged weights (what AWD-LSTM evaluates and saves)."""
        result = super().train(*args, **kwargs)
        if self.nt_asgd is not None and self.nt_asgd.active:
            self.nt_asgd.copy_into(self.model, self.nt_asgd.average)
            self.nt_asgd.average = None  # the model now holds it; later evaluations use the model as it is
        return result

    # ----- evaluation -----
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Perplexity = exp(total NLL / total predicted tokens) over the whole split, gathered over processes.

        On a `StreamSegments` split the state is carried across its batches (stream evaluation); on blocks every
        batch starts from a zero state (per-block evaluation).
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if isinstance(dataset, StreamSegments):
            check_layout(
                dataset, self.args.per_device_eval_batch_size, self.args.world_size, "per_device_eval_batch_size"
            )
        dataloader = self.get_eval_dataloader(dataset)
        model = self._wrap_model(self.model, training=False, dataloader=dataloader)
        averaging = self.nt_asgd.averaged_weights(self.model) if self.nt_asgd is not None else nullcontext()
        with averaging, full_precision(self.model, self.args):
            metrics = self.stream_perplexity(model, dataloader, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def stream_perplexity(self, model, dataloader, metric_key_prefix: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        carried = CarriedState()
        sums = {"": ([], []), "backward_": ([], [])}  # direction -> (NLL sums, token counts); "" is forward
        with torch.no_grad():
            for inputs in dataloader:
                inputs = self._prepare_inputs(inputs)
                stateful = "segment_id" in inputs
                cache = carried.take(*(inputs.pop(key) for key in STREAM_KEYS)) if stateful else None
                targets = inputs.pop("shift_labels")
                inputs.pop("labels", None)
                outputs = model(**inputs, cache=cache, use_cache=stateful)
                carried.cache = getattr(outputs, CACHE_FIELD)
                scored = [("", outputs.logits, targets)]
                if getattr(outputs, "logits_backward", None) is not None:  # a bidirectional LM: the previous tokens
                    previous = RNNLMForCausalLM.backward_targets(inputs["input_ids"], inputs.get("attention_mask"))
                    scored.append(("backward_", outputs.logits_backward[:, 1:], previous[:, :-1]))
                for direction, logits, wanted in scored:
                    nll = torch.nn.functional.cross_entropy(
                        logits.flatten(0, 1).float(), wanted.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
                    )
                    count = (wanted != IGNORE_INDEX).sum()
                    pair = self.accelerator.gather(torch.stack([nll, count.to(nll.dtype)]).unsqueeze(0))
                    sums[direction][0].extend(pair[:, 0].tolist())
                    sums[direction][1].extend(pair[:, 1].long().tolist())
        model.train(was_training)
        metrics = {}
        for direction, (nll_sums, token_counts) in sums.items():
            if token_counts or not direction:
                result = self.perplexity_metric.compute(predictions=nll_sums, references=token_counts)
                metrics[f"{metric_key_prefix}_{direction}loss"] = result["loss"]
                metrics[f"{metric_key_prefix}_{direction}perplexity"] = result["perplexity"]
                metrics[f"{metric_key_prefix}_{direction}tokens"] = result["num_tokens"]
        return metrics

    # ----- checkpoints: carried state + completion marker -----
    def _save_checkpoint(self, model, trial):
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        # Trainer deletes old checkpoints (save_total_limit) at the end of its own save, before our state file and
        # marker: rotate only once this one is complete, so a failed write never leaves no usable checkpoint.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
            state_path = folder / STATE_FILE.format(process=self.args.process_index)
            atomic_torch_save(self.carried["train"].state_dict(), state_path)
            if self.nt_asgd is not None and self.args.should_save:
                atomic_torch_save(self.nt_asgd.state_dict(), folder / NT_ASGD_FILE)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))
        except OSError as error:  # disk full, read-only or vanished folder
            raise CheckpointWriteError(folder, error, last_complete_checkpoint(run_dir)) from error
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save and rotate_checkpoints is not None:
            rotate_checkpoints(str(run_dir), limit, self.state.best_model_checkpoint)
        elif self.args.should_save:
            self._rotate_checkpoints(use_mtime=False, output_dir=str(run_dir))

    def _issue_warnings_after_load(self, load_result):
        # A tied head is saved once, as the embeddings: re-tie it instead of reporting `lm_head.weight` missing.
        tied = (
            set(getattr(self.model, "_tied_weights_keys", None) or ())
            if self.model.config.tie_word_embeddings
            else set()
        )
        missing = [key for key in load_result.missing_keys if key not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_path = Path(resume_from_checkpoint) / STATE_FILE.format(process=self.args.process_index)
        if state_path.is_file():
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
            self.carried["train"].load_state_dict(saved, self.model.config, self.args.device)
        asgd_path = Path(resume_from_checkpoint) / NT_ASGD_FILE
        if self.nt_asgd is not None and asgd_path.is_file():
            saved = torch.load(asgd_path, map_location="cpu", weights_only=True)
            self.nt_asgd.load_state_dict(saved, self.args.device)


def check_layout(dataset: StreamSegments, batch_size: int, world_size: int, option: str) -> None:
    """Streams are laid out for one batch size and process count; any other would mix streams across rows."""
    if (dataset.batch_size, dataset.num_processes) != (batch_size, world_size):
        raise ValueError(
            f"The stream segments were built for {dataset.batch_size} rows x {dataset.num_processes} processes, but "
            f"--{option} is {batch_size} on {world_size} processes: build them with the same values."
        )


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the folder, the cause and the checkpoint to resume from."""

    def __init__(self, folder: Path, error: OSError, previous: str | None):
        cause = error.strerror or str(error) or type(error).__name__
        where = f" ({error.filename})" if error.filename else ""
        resume = (
            f"the previous checkpoint {previous} is complete: resume from it with --resume_from_checkpoint auto"
            if previous
            else "no earlier checkpoint is complete, so a new run starts from scratch"
        )
        super().__init__(
            f"could not write checkpoint {folder}: {cause}{where}. Free disk space or make {folder.parent} writable; "
            f"{resume} (the incomplete folder is never resumed from)."
        )


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint whose save finished; folders cut short by a kill are skipped."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    candidates = [
        path
        for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.is_dir() and path.name.split("-")[-1].isdigit() and (path / COMPLETE_MARKER).is_file()
    ]
    return str(max(candidates, key=lambda path: int(path.name.split("-")[-1]))) if candidates else None


class NonFiniteLossError(ValueError):
    """The training loss or its gradients became NaN/inf (raised by `GradientHealthCallback` in "stop" mode)."""


class GradientHealthCallback(TrainerCallback):
    """Checks the gradients before every optimizer step; a NaN/inf gradient (from a non-finite loss or an overflow)
    stops the run before the update (`on_nonfinite="stop"`: the weights and the last checkpoint stay good) or drops
    that update (`"skip"`). Logs `nonfinite_steps`, the count of dropped updates, and, whenever `max_grad_norm` is
    set, `clipped_share`: the share of the optimizer steps since the last log that were clipped (Pascanu et al. 2013,
    https://arxiv.org/abs/1211.5063). Trainer already logs `grad_norm`, the pre-clip norm of the logging step.
    Works with any `Trainer`: `callbacks=[GradientHealthCallback()]`.
    """

    # Trainer calls on_pre_optimizer_step after clipping, which rescales the gradients to norm
    # max_grad_norm * total / (total + 1e-6): a step was clipped iff the norm now sits at the limit.
    CLIP_TOLERANCE = 1e-4

    def __init__(self, on_nonfinite: str = "stop"):
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.nonfinite_steps = 0
        self.steps, self.clipped_steps = 0, 0  # since the last log

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        # One host sync per step: the norm of all gradients is finite iff every gradient is (foreach kernels, as clipping).
        norm = float(torch.nn.utils.get_total_norm(grads))
        self.steps += 1
        limit = args.max_grad_norm or 0
        self.clipped_steps += limit > 0 and norm >= limit * (1 - self.CLIP_TOLERANCE)
        if math.isfinite(norm):
            return
        step = state.global_step + 1
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"the training loss or its gradients became NaN/inf at step {step}, so training stopped before that "
                "update: lower --learning_rate, clip with --max_grad_norm, train in fp32, or pass --on_nonfinite skip "
                "to drop such steps (resume with --resume_from_checkpoint auto)"
            )
        self.nonfinite_steps += 1
        logger.warning("Step %d: non-finite gradients, update skipped (%d so far)", step, self.nonfinite_steps)
        # A parameter without a gradient is left alone by the optimizer step.
        optimizer.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["nonfinite_steps"] = self.nonfinite_steps
            if (args.max_grad_norm or 0) > 0 and self.steps:
                logs["clipped_share"] = round(self.clipped_steps / self.steps, 4)
            self.steps, self.clipped_steps = 0, 0
