"""What a training run leaves beside its model: the command, arguments and metrics, read back by the model card."""

import dataclasses
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


RUN_INFO_FILE = "run_info.json"


@dataclass(frozen=True)
class Task:
    """A task a run trains for: its head class (in `modeling_rnn_lm.MODEL_CLASSES`) and how the Hub names it."""

    model_class: str
    pipeline_tag: str
    title: str

    @property
    def auto_class(self) -> str:
        """The Auto class that loads the head (from the modeling file's table)."""
        from .modeling_rnn_lm import MODEL_CLASSES

        return next(name for name, model_class in MODEL_CLASSES.items() if model_class.__name__ == self.model_class)


# The one table of tasks; the model card, `rnn-lm generate` and run_info.json's `task` read it.
TASKS = {
    "causal-lm": Task("RNNLMForCausalLM", "text-generation", "Causal language modeling"),
    "token-classification": Task("RNNLMForTokenClassification", "token-classification", "Token classification"),
    "sequence-classification": Task("RNNLMForSequenceClassification", "text-classification", "Text classification"),
}


def task_of(architectures: list[str] | None) -> str | None:
    """The task of a saved model from its config's `architectures`, or None for no head of ours."""
    return next((name for name, task in TASKS.items() if task.model_class in (architectures or [])), None)


# Never written anywhere: the values of options that carry credentials. Whole names, not substrings: `token` alone or
# with a credential prefix (hub_token, push_to_hub_token, hf_token, auth_token, access_token, api_token), and
# passwords, secrets and keys; `tokenizer_kind` or `label_sub_token` describe the run and must stay re-runnable.
SECRET_NAME = re.compile(
    r"^((hub|push_to_hub|hf|auth|access|api|bearer)_)?token$|passw(or)?d|secret|(^|_)(api|access|private)_?key$"
)


# User access tokens look like `hf_` + 34 letters/digits; 30+ keeps clear of ordinary words.
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def is_secret(name: str) -> bool:
    """Whether an option or argument name (with or without leading dashes) holds a credential."""
    return bool(SECRET_NAME.search(name.lstrip("-").lower().replace("-", "_")))


def secret_values(token: str | None = None) -> list[str]:
    """The token values in use (`token`, `HF_TOKEN`, ...): never to be written anywhere."""
    values = [token, *(os.environ.get(name) for name in TOKEN_ENV_VARS)]
    return [value for value in values if value and len(value) >= 8]


def redact(text: str) -> str:
    """Blank out anything that looks like a Hub token (and the current token's value) before it reaches a card."""
    for secret in secret_values():
        text = text.replace(secret, "<redacted>")
    # The values of credential options (--hub_token X, --password=X); other options (--tokenizer_kind) stay.
    text = re.sub(r"(--([\w-]+)[= ])(\S+)", lambda m: m[1] + "<redacted>" if is_secret(m[2]) else m[0], text)
    return TOKEN_PATTERN.sub("<redacted>", text)


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would retype it (shell-quoted), with the values of secret options blanked."""
    if Path(sys.argv[0]).name in ("rnn-lm", "__main__.py"):  # through the CLI: what the user typed
        argv = ["rnn-lm", *sys.argv[1:]]
    else:
        argv = ["python", *(sys.argv if argv is None else [sys.argv[0], *argv])]
    for i, part in enumerate(argv):
        if part.startswith("--") and is_secret(part.split("=")[0]):
            if "=" in part:
                argv[i] = f"{part.split('=')[0]}=***"
            elif i + 1 < len(argv):
                argv[i + 1] = "***"
    return " ".join(shlex.quote(part) for part in argv)


def public_arguments(*arguments: Any) -> dict[str, Any]:
    """Merge argument dataclasses into one JSON-safe dict, without secrets."""
    merged: dict[str, Any] = {}
    for group in arguments:
        values = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        merged.update(values)
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        for key, value in merged.items()
        if not is_secret(key)
    }


def save_run_info(
    output_dir: str | Path,
    *,
    task: str,
    command: str,
    arguments: dict[str, Any],
    metrics: dict[str, float],
    dataset: str,
    evaluation_protocol: str,
    wall_time_s: float | None = None,
) -> Path:
    """Write `run_info.json` atomically (a killed run never leaves half a file)."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {', '.join(TASKS)}; got {task!r}.")
    info = {
        "task": task,
        "command": command,
        "dataset": dataset,
        "evaluation_protocol": evaluation_protocol,
        "metrics": metrics,
        "arguments": arguments,
        "wall_time_s": wall_time_s,
    }
    path = Path(output_dir) / RUN_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def load_run_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / RUN_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it is written at the end of every training script. Re-run the training script, or "
            "write it with rnn_lm_hf.run_info.save_run_info."
        )
    return json.loads(path.read_text())
