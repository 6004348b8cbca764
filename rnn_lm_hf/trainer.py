"""`Trainer` for recurrent LMs: stateful truncated BPTT, token-weighted perplexity, epoch-wise LR decay, safe resume.

Stateful truncated BPTT (Zaremba et al. 2014; pytorch/examples word_language_model's `repackage_hidden`): the
training split is a `StreamSegments` dataset whose sequential batches continue B parallel streams. The final hidden
state of each batch is detached (the cache stores detached states) and carried into the next batch, so gradients
flow through `bptt` steps while the state sees the whole stream; it is reset at each epoch start (`segment_id == 0`).
Each process owns its own streams (see `StreamSegments`), so this works with gradient accumulation and under DDP.
"""

import csv
import math
import os
import time
from pathlib import Path

import evaluate
import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .data import StreamSegments
from .metrics import metric_path
from .modeling_rnn_lm import CACHE_FIELD, RNNLMCache


STATE_FILE = "rnn_state_{process}.pt"
# Written last into a checkpoint folder: a folder without it was cut short by a kill and is never resumed from.
COMPLETE_MARKER = "checkpoint_complete"
STREAM_KEYS = ("stream_id", "segment_id")


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
    """Every logged value as a row `step,epoch,name,value` (long format: the columns never change mid-run)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["step", "epoch", "name", "value"])
            for name, value in logs.items():
                if isinstance(value, (int, float)):
                    writer.writerow([state.global_step, state.epoch, name, value])


class TimeBudgetCallback(TrainerCallback):
    """Ends training after `minutes` of wall time, with a checkpoint and an evaluation, as if the epochs had run out
    (a GPU lease or a job slot with a hard limit). The learning-rate schedule is not rescaled."""

    def __init__(self, minutes: float):
        self.seconds, self.start = 60 * minutes, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start > self.seconds and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
            control.should_evaluate = args.eval_strategy != "no"


def epoch_decay_lambda(steps_per_epoch: int, decay: float, start_epoch: int):
    """Zaremba et al.'s schedule: the learning rate stays for `start_epoch` epochs, then is multiplied by `decay` at
    every epoch start (lr of 0-based epoch e = lr * decay ** max(0, e + 1 - start_epoch))."""

    def factor(step: int) -> float:
        return decay ** max(0, step // steps_per_epoch + 1 - start_epoch)

    return factor


class RNNLMTrainer(Trainer):
    """`Trainer` that carries the recurrent state across batches of a `StreamSegments` split and evaluates
    perplexity token-weighted over the whole split (the way published PTB/WikiText numbers are computed)."""

    def __init__(self, *args, lr_decay: float | None = None, lr_decay_start_epoch: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_decay, self.lr_decay_start_epoch = lr_decay, lr_decay_start_epoch
        self.carried = {"train": CarriedState(), "eval": CarriedState()}
        self.perplexity_metric = evaluate.load(metric_path("perplexity"), keep_in_memory=True)

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
        if self.lr_decay is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        accumulation = self.args.gradient_accumulation_steps
        steps_per_epoch = max(1, math.ceil(len(self.get_train_dataloader()) / accumulation))
        factor = epoch_decay_lambda(steps_per_epoch, self.lr_decay, self.lr_decay_start_epoch)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    # ----- training -----
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "segment_id" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        stream_ids, segment_ids = (inputs.pop(key) for key in STREAM_KEYS)
        carried = self.carried["train" if model.training else "eval"]
        inputs = {**inputs, "cache": carried.take(stream_ids, segment_ids), "use_cache": True}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        carried.cache = getattr(outputs, CACHE_FIELD)  # the model stores detached states
        return (loss, outputs) if return_outputs else loss

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
        model.eval()
        carried = CarriedState()
        nll_sums, token_counts = [], []
        with torch.no_grad():
            for inputs in dataloader:
                inputs = self._prepare_inputs(inputs)
                stateful = "segment_id" in inputs
                cache = carried.take(*(inputs.pop(key) for key in STREAM_KEYS)) if stateful else None
                targets = inputs.pop("shift_labels")
                inputs.pop("labels", None)
                outputs = model(**inputs, cache=cache, use_cache=stateful)
                carried.cache = getattr(outputs, CACHE_FIELD)
                nll = torch.nn.functional.cross_entropy(
                    outputs.logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"
                )
                count = (targets != -100).sum()
                pair = self.accelerator.gather(torch.stack([nll, count.to(nll.dtype)]).unsqueeze(0))
                nll_sums += pair[:, 0].tolist()
                token_counts += pair[:, 1].long().tolist()
        result = self.perplexity_metric.compute(predictions=nll_sums, references=token_counts)
        metrics = {
            f"{metric_key_prefix}_loss": result["loss"],
            f"{metric_key_prefix}_perplexity": result["perplexity"],
            f"{metric_key_prefix}_tokens": result["num_tokens"],
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ----- checkpoints: carried state + completion marker -----
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if not folder.is_dir():  # rotated away already (save_total_limit)
            return
        state_path = folder / STATE_FILE.format(process=self.args.process_index)
        atomic_torch_save(self.carried["train"].state_dict(), state_path)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_path = Path(resume_from_checkpoint) / STATE_FILE.format(process=self.args.process_index)
        if state_path.is_file():
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
            self.carried["train"].load_state_dict(saved, self.model.config, self.args.device)


def check_layout(dataset: StreamSegments, batch_size: int, world_size: int, option: str) -> None:
    """Streams are laid out for one batch size and process count; any other would mix streams across rows."""
    if (dataset.batch_size, dataset.num_processes) != (batch_size, world_size):
        raise ValueError(
            f"The stream segments were built for {dataset.batch_size} rows x {dataset.num_processes} processes, but "
            f"--{option} is {batch_size} on {world_size} processes: build them with the same values."
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


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")
