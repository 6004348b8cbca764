"""What a training run leaves beside its model: the command, arguments and metrics, read back by the model card."""

import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any


RUN_INFO_FILE = "run_info.json"
TASKS = ("causal-lm", "token-classification", "sequence-classification")
# Never written anywhere: the values of options that carry credentials. Whole names, not substrings: `token` alone or
# with a credential prefix (hub_token, push_to_hub_token, hf_token, auth_token, access_token, api_token), and
# passwords, secrets and keys; `tokenizer_kind` or `label_sub_token` describe the run and must stay re-runnable.
SECRET_NAME = re.compile(
    r"^((hub|push_to_hub|hf|auth|access|api|bearer)_)?token$|passw(or)?d|secret|(^|_)(api|access|private)_?key$"
)


def is_secret(name: str) -> bool:
    """Whether an option or argument name (with or without leading dashes) holds a credential."""
    return bool(SECRET_NAME.search(name.lstrip("-").lower().replace("-", "_")))


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
