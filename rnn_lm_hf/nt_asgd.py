"""NT-ASGD: non-monotonically triggered averaged SGD (Merity et al. 2018, "Regularizing and Optimizing LSTM Language
Models", section 3), as a `Trainer` callback.

Training runs plain SGD until the validation loss has not improved on the best of all but the last `nonmono` checks;
from then on it keeps a running average of the weights after every optimizer step (Polyak averaging: ASGD with
t0 = trigger step and no decay, which is what AWD-LSTM does by switching to `torch.optim.ASGD(t0=0, lambd=0)`).
Evaluation and the saved model use the averaged weights; checkpoints keep the raw ones plus the average, so a killed
run resumes with its average. AWD-LSTM's finetune stage is `average_from_start`: average from the first step and stop
when the same non-monotone criterion fires. A run with a wall-time budget can also start averaging at the latest
after `start_after_minutes` of training, so that it never ends before the validation loss has had time to stall.
"""

import time
from contextlib import contextmanager

import torch
from transformers import TrainerCallback


class NTASGDCallback(TrainerCallback):
    """Triggers weight averaging on stalled validation loss and maintains the average (see the module docstring)."""

    def __init__(self, nonmono: int = 5, average_from_start: bool = False, start_after_minutes: float | None = None):
        if nonmono < 1:
            raise ValueError(f"nt_asgd_nonmono must be a positive int (AWD-LSTM uses 5), got {nonmono}.")
        self.nonmono, self.average_from_start = nonmono, average_from_start
        self.start_after_s = None if start_after_minutes is None else 60 * start_after_minutes
        self.train_start = time.monotonic()
        self.history: list[float] = []  # validation loss at every check
        self.average: dict[str, torch.Tensor] | None = None  # name -> averaged parameter
        self.num_averaged = 0
        self.trigger_step: int | None = None
        self.finished = False  # evaluations after training (the test split, a re-check) change nothing

    @property
    def active(self) -> bool:
        return self.average is not None

    def stalled(self, loss: float) -> bool:
        """AWD's test: worse than the best loss of all checks but the last `nonmono`."""
        return len(self.history) > self.nonmono and loss > min(self.history[: -self.nonmono])

    def start(self, model: torch.nn.Module, step: int) -> None:
        self.average = {name: param.detach().clone() for name, param in model.named_parameters()}
        self.num_averaged, self.trigger_step = 1, step

    # ----- Trainer events -----
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.train_start = time.monotonic()
        if self.average_from_start and not self.active:
            self.start(model, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.finished = True

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.active:
            late = self.start_after_s is not None and time.monotonic() - self.train_start > self.start_after_s
            if late:  # the time budget's latest trigger: the average starts with the weights after this step
                self.start(model, state.global_step)
            return
        self.num_averaged += 1
        names, params = zip(*model.named_parameters())
        with torch.no_grad():  # running mean avg += (w - avg) / n, every parameter in one foreach kernel
            torch._foreach_lerp_([self.average[name] for name in names], list(params), 1 / self.num_averaged)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or self.finished:
            return
        if self.stalled(loss):
            if self.average_from_start:
                control.should_training_stop = True  # the finetune stage is done (AWD's finetune.py)
            elif not self.active:
                self.start(model, state.global_step)
        self.history.append(loss)

    # ----- averaged weights -----
    @contextmanager
    def averaged_weights(self, model: torch.nn.Module):
        """Temporarily swap the averaged weights in (for evaluation), restoring the raw ones afterwards."""
        if not self.active:
            yield model
            return
        raw = {name: param.detach().clone() for name, param in model.named_parameters()}
        self.copy_into(model, self.average)
        try:
            yield model
        finally:
            self.copy_into(model, raw)

    @staticmethod
    def copy_into(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(weights[name])

    # ----- checkpoints -----
    def state_dict(self) -> dict:
        average = None if self.average is None else {k: v.cpu() for k, v in self.average.items()}
        return {
            "history": self.history,
            "average": average,
            "num_averaged": self.num_averaged,
            "trigger_step": self.trigger_step,
        }

    def load_state_dict(self, saved: dict, device: torch.device) -> None:
        self.history = list(saved["history"])
        self.average = None if saved["average"] is None else {k: v.to(device) for k, v in saved["average"].items()}
        self.num_averaged, self.trigger_step = saved["num_averaged"], saved["trigger_step"]
