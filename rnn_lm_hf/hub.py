"""Hub publishing for saved rnn-lm-hf folders (package code: never shipped as remote code), and where models load from.

A training run leaves `config.json`, `model.safetensors`, the two code files, the tokenizer, `generation_config.json`
(causal LM), `run_info.json` and its model card (`model_card.py`) in its output folder. `publish` checks that the
folder loads as Hub code (`validate_folder`) and only then talks to the Hub, through `huggingface_hub` (`HF_ENDPOINT`
and `HF_TOKEN` or the saved login are honoured; tokens are never passed on the command line). The command lines are
`rnn-lm card`, `rnn-lm check` and `rnn-lm push` (`cli.py`).
"""

import ast
import json
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

from .configuration_rnn_lm import RNNLMConfig
from .model_card import (
    CARD_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    count_parameters,
    evaluation_results,
    read_json,
    run_metrics,
    write_model_card,
)
from .modeling_rnn_lm import auto_map
from .run_info import RUN_INFO_FILE, TASKS, TOKEN_PATTERN, redact, secret_values, task_of


logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Optional files a tokenizer or a run may leave; uploaded when present. Nothing else in an output folder goes up:
# checkpoint-*/ (optimizer states), runs/ (tensorboard) and training_args.bin (a pickle that can hold a hub token).
OPTIONAL_FILES = (
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    RUN_INFO_FILE,
    METRICS_FILE,
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "predict_results.json",
    "trainer_state.json",
)
# What a Hub repo id can look like: `name` or `namespace/name` (huggingface_hub.utils.validate_repo_id's rule).
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class PublishError(RuntimeError):
    """The upload itself failed (network, permissions, server); the local folder is untouched."""


# --------------------------------------------------------------------------------------------- loading


def check_model_source(source: str, option: str | None = "model_name_or_path") -> str:
    """`source` itself when it is an existing path or can be a Hub repo id; else a `FileNotFoundError` at once.

    A missing folder would otherwise reach `from_pretrained` and end in "Repo id must be in the form ..." or, for a
    mistyped relative path such as `runs/lm_wikitxt2` (which has the shape of `org/name`), in half a minute of Hub
    retries. A path counts as local when it starts with `.`, `/` or `~`, has more than one `/`, is no valid repo id,
    or its first part is a folder here (`runs/`). With `HF_HUB_OFFLINE` set, a repo id must be in the Hub cache: a
    recipe that continues `runs/lm` on a clone that never trained it fails here, not in "couldn't connect".
    """
    if Path(source).expanduser().exists():
        return source
    first = Path(source).parts[0] if Path(source).parts else ""
    local = (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or not REPO_ID_PATTERN.match(source)
        or ("/" in source and Path(first).is_dir())
    )
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    offline_uncached = (
        not local
        and huggingface_hub.constants.HF_HUB_OFFLINE
        and not (cache / repo_folder_name(repo_id=source, repo_type="model")).is_dir()
    )
    if local or offline_uncached:
        hub = ", and HF_HUB_OFFLINE is set with no Hub repo of that id cached" if offline_uncached else ""
        raise FileNotFoundError(
            f"{f'--{option} ' if option else ''}{source}: no such model folder (relative to {Path.cwd()}){hub}; pass a "
            "folder written by a training script or save_pretrained, or a Hub repo id such as org/name"
        )
    return source


def model_task(source: str, **kwargs) -> str | None:
    """The task of a saved model's head ("causal-lm", "token-classification", ...) from its config, or None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(check_model_source(source, None), **kwargs)
    return task_of(config.architectures)


def check_causal_lm(source: str, command: str = "rnn-lm evaluate", trust_remote_code: bool = False) -> str:
    """`source` when it is a causal LM with its tokenizer; otherwise one-line errors that name the fix.

    A missing folder raises `FileNotFoundError` (`hub.check_model_source`); a folder holding a tagger or classifier
    raises `ValueError` naming its head and the pipeline to run it with (transformers would load it as a causal LM
    and complain about `bidirectional=True`, or fail inside a pipeline); a local folder without tokenizer files raises
    `ValueError` saying to save the tokenizer there (transformers would say that sentencepiece or tiktoken must be
    installed). `command` (e.g. "rnn-lm generate") is named in the messages.
    """
    check_model_source(source, None)
    task = model_task(source, trust_remote_code=trust_remote_code)
    if task not in (None, "causal-lm"):
        head = TASKS[task]
        trainer = "train-tagger" if task == "token-classification" else "train-classifier"
        raise ValueError(
            f"{source} holds a {head.model_class} ({task} head), and `{command}` needs a causal LM "
            f"(RNNLMForCausalLM, from `rnn-lm train`); run this model with pipeline('{head.pipeline_tag}', "
            f"model='{source}') (it comes from `rnn-lm {trainer}`)"
        )
    folder = Path(source).expanduser()
    if folder.is_dir() and not (folder / "tokenizer.json").is_file():
        raise ValueError(
            f"{source} has no tokenizer (tokenizer.json is missing), so `{command}` cannot encode text: save the "
            f"tokenizer the model was trained with into it, tokenizer.save_pretrained('{source}') (`rnn-lm check "
            f"{source}` lists every missing file)"
        )
    return source


# --------------------------------------------------------------------------------------------- model card


def finish_run(output_dir: str | Path, training_args, push_to_hub: bool) -> None:
    """End of every training script: write the model card and, with `--push_to_hub`, publish the folder.

    Scripts turn Trainer's own `push_to_hub` off (it would push every checkpoint and overwrite the card) and call
    this once instead. A run without evaluation metrics gets no card, with a warning: it has nothing to report.
    """
    try:
        write_model_card(output_dir, repo_id=training_args.hub_model_id)
    except ValueError as error:
        if push_to_hub:
            raise
        logger.warning(f"No model card written: {error}")
        return
    if push_to_hub:
        repo_id = training_args.hub_model_id or Path(output_dir).resolve().name
        url = publish(
            output_dir, repo_id, private=bool(training_args.hub_private_repo),
            revision=getattr(training_args, "hub_revision", None), token=training_args.hub_token,
        )  # fmt: skip
        print(f"[hub] published {repo_id}: {url}")


# --------------------------------------------------------------------------------------------- folder checks


def validate_folder(model_dir: str | Path, *, token: str | None = None) -> list[str]:
    """Check that `model_dir` loads as Hub code and is safe to publish; return the files `publish` uploads.

    Checks: `config.json` with the complete `auto_map`, every entry naming a class defined in a shipped `.py` file
    (read with `ast`, never imported) whose relative imports resolve; weights in safetensors; the tokenizer, within
    the model's vocabulary; `generation_config.json` for a causal LM; a `README.md` card with results; and no Hub token
    (`hf_...`, or the value of `token`/`HF_TOKEN`) in any file to upload.

    Raises:
        FileNotFoundError: `model_dir` is not a folder.
        ValueError: one line per problem, each naming the fix.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass the output folder of a training run.")
    problems: list[str] = []
    files: list[str] = []
    config = _check_config(folder, problems)
    if config is not None:
        files.append("config.json")
        files += _check_code(folder, config, problems)
    files += _check_weights(folder, problems)
    files += _check_tokenizer(folder, config, problems)
    is_causal_lm = config is not None and task_of(config.get("architectures")) == "causal-lm"
    if (folder / "generation_config.json").is_file():
        files.append("generation_config.json")
    elif is_causal_lm:
        problems.append(
            "generation_config.json is missing: a causal LM needs it for generate() and pipelines; re-save the model "
            "with model.save_pretrained(folder)."
        )
    files += _check_card(folder, problems)
    files += [name for name in OPTIONAL_FILES if (folder / name).is_file()]
    files = sorted(set(files))
    problems += _find_secrets(folder, files, token)
    if problems:
        listed = problems[0] if len(problems) == 1 else "".join(f"\n  - {problem}" for problem in problems)
        raise ValueError(f"{folder} cannot be published: {listed}")
    return files


def _check_config(folder: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        config = read_json(folder / "config.json", "save the model with model.save_pretrained(folder)")
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
        return None
    if config.get("model_type") != "rnn_lm":
        problems.append(
            f"config.json has model_type {config.get('model_type')!r}, not 'rnn_lm': not an rnn-lm-hf model."
        )
    missing = [name for name in auto_map() if name not in (config.get("auto_map") or {})]
    if missing:
        problems.append(
            f"config.json auto_map lacks {', '.join(missing)}: re-save the model with model.save_pretrained(folder) "
            "(rnn-lm-hf models write the complete auto_map)."
        )
    return config


def _check_code(folder: Path, config: dict[str, Any], problems: list[str]) -> list[str]:
    """Every auto_map class exists in a shipped module, and those modules' relative imports resolve."""
    shipped: dict[str, set[str] | None] = {}  # module -> names defined at top level (None: file missing)
    reported_missing: set[str] = set()  # one message per missing file, however many entries point to it

    def names_in(module: str) -> set[str] | None:
        if module not in shipped:
            path = folder / f"{module}.py"
            shipped[module] = _top_level_names(path) if path.is_file() else None
        return shipped[module]

    for auto_name, reference in (config.get("auto_map") or {}).items():
        for ref in reference if isinstance(reference, list) else [reference]:
            if not ref:
                continue
            module, _, class_name = ref.split("--")[-1].rpartition(".")
            names = names_in(module)
            if names is None and module in reported_missing:
                continue
            if names is None:
                reported_missing.add(module)
                problems.append(
                    f"{module}.py is missing (auto_map {auto_name} points to it): re-save the model with "
                    "model.save_pretrained(folder), which copies the code files."
                )
            elif class_name not in names:
                problems.append(
                    f"auto_map {auto_name} points to {ref}, but {module}.py defines no class {class_name}: fix "
                    "config.json's auto_map or re-save the model with model.save_pretrained(folder)."
                )
    # Relative imports between shipped modules (modeling -> configuration), transitively.
    pending = [module for module, names in shipped.items() if names is not None]
    checked: set[str] = set()
    while pending:
        module = pending.pop()
        if module in checked:
            continue
        checked.add(module)
        for imported, names, absolute in _imports(folder / f"{module}.py"):
            if absolute:
                problems.append(
                    f"{module}.py imports {imported} absolutely: Hub code must import only torch, transformers and "
                    "its sibling files (from .x import Y)."
                )
                continue
            defined = names_in(imported)
            if defined is None:
                if imported not in reported_missing:
                    problems.append(
                        f"{module}.py imports .{imported}, but {imported}.py is not in the folder: copy it."
                    )
                    reported_missing.add(imported)
                continue
            for name in sorted(set(names) - defined - {"*"}):
                problems.append(f"{module}.py imports {name} from .{imported}, which does not define it.")
            pending.append(imported)
    return sorted(f"{module}.py" for module, names in shipped.items() if names is not None)


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _imports(path: Path) -> Iterable[tuple[str, list[str], bool]]:
    """`(module, names, is_package_import)` for imports of sibling files or of the rnn_lm_hf package."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            yield node.module, [alias.name for alias in node.names], False
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rnn_lm_hf"):
            yield node.module, [], True
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rnn_lm_hf"):
                    yield alias.name, [], True


def _check_weights(folder: Path, problems: list[str]) -> list[str]:
    index = folder / WEIGHTS_INDEX_FILE
    try:
        count_parameters(folder)
    except FileNotFoundError:
        problems.append(
            f"{WEIGHTS_FILE} is missing: save the model with model.save_pretrained(folder) (safetensors is the default)."
        )
        return []
    except (ValueError, KeyError, struct.error) as error:
        problems.append(f"the safetensors weights in {folder} are unreadable ({error}): save the model again.")
        return []
    if index.is_file():
        return [WEIGHTS_INDEX_FILE, *sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [WEIGHTS_FILE]


def _check_tokenizer(folder: Path, config: dict[str, Any] | None, problems: list[str]) -> list[str]:
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        problems.append(
            f"{', '.join(missing)} missing: the folder has no (complete) tokenizer, so users could not encode text. "
            "Save it with tokenizer.save_pretrained(folder)."
        )
        return [name for name in TOKENIZER_FILES if name not in missing]
    vocab_size = (config or {}).get("vocab_size")
    try:
        backend = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        problems.append(f"tokenizer.json is not valid JSON ({error}): save the tokenizer again.")
        return list(TOKENIZER_FILES)
    vocab = (backend.get("model") or {}).get("vocab")
    ids = [*(vocab.values() if isinstance(vocab, dict) else []), *(t["id"] for t in backend.get("added_tokens") or [])]
    if isinstance(vocab_size, int) and ids and max(ids) >= vocab_size:
        problems.append(
            f"the tokenizer has token id {max(ids)} but the model's vocab_size is {vocab_size}: this tokenizer belongs "
            "to another model; save the tokenizer the model was trained with, or resize the embeddings."
        )
    return list(TOKENIZER_FILES)


def _check_card(folder: Path, problems: list[str]) -> list[str]:
    path = folder / CARD_FILE
    fix = (
        "write it with `rnn-lm card FOLDER` (it needs evaluation metrics: run_info.json or the Trainer's "
        "*_results.json)"
    )
    if not path.is_file():
        problems.append(f"{CARD_FILE} (the model card) is missing: {fix}.")
        return []
    try:
        card = ModelCard(path.read_text(encoding="utf-8"))
    except ValueError as error:
        problems.append(f"{CARD_FILE} metadata is invalid ({' '.join(str(error).split())}): {fix}.")
        return [CARD_FILE]
    if not card.data.eval_results:
        problems.append(
            f"{CARD_FILE} has no results (no model-index): a card without results is not published; {fix}."
        )
    elif (folder / RUN_INFO_FILE).is_file():
        # A card left from an earlier evaluation would publish numbers this folder's run does not have.
        try:
            expected = {(split, metric): value for split, metric, value in evaluation_results(run_metrics(folder))}
        except ValueError as error:
            problems.append(str(error))
        else:
            shown = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
            if shown != expected:
                problems.append(
                    f"{CARD_FILE} results differ from the run's metrics ({RUN_INFO_FILE}, {METRICS_FILE}): regenerate "
                    "the card with `rnn-lm card FOLDER`."
                )
    if card.data.library_name != "transformers":
        problems.append(f"{CARD_FILE} metadata lacks library_name: transformers: {fix}.")
    return [CARD_FILE]


def _find_secrets(folder: Path, files: list[str], token: str | None) -> list[str]:
    secrets = secret_values(token)
    found = []
    for name in files:
        if name.endswith(".safetensors"):
            continue  # binary tensors: no text to leak into
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        if TOKEN_PATTERN.search(text) or any(secret in text for secret in secrets):
            found.append(name)
    if found:
        return [
            f"{', '.join(found)} contain(s) a Hub access token: remove it (and revoke the token) before publishing; "
            "pass tokens through HF_TOKEN or `hf auth login`, never on a command line or in arguments."
        ]
    return []


# --------------------------------------------------------------------------------------------- publishing


def publish(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Validate `model_dir`, then upload it to the Hub repo `repo_id` in one commit; return the commit URL.

    Args:
        model_dir: a folder that passes `validate_folder` (only the files it lists are uploaded).
        repo_id: `namespace/name`; created when missing.
        private: create the repo private. An existing public repo is never published to with `private=True`.
        revision: a branch to commit to (created from `main` when missing); `None` means `main`.
        commit_message: defaults to a summary of the model.
        token: a Hub token; defaults to `HF_TOKEN` or the saved login. Never written anywhere.
        endpoint: the Hub URL; defaults to `HF_ENDPOINT`, then huggingface.co.

    Raises:
        FileNotFoundError, ValueError: the folder is not publishable (nothing was sent).
        PublishError: the Hub refused or the connection failed; the local folder is unchanged.
    """
    folder = Path(model_dir)
    files = validate_folder(folder, token=token)
    validate_repo_id(repo_id)  # a ValueError naming the rule, before any request
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it to publish.")
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    config = RNNLMConfig.from_json_file(folder / "config.json")
    message = commit_message or (
        f"Upload {(config.architectures or ['RNN-LM'])[0]} ({config.cell_type}, {config.num_hidden_layers} layers) "
        "with rnn-lm-hf"
    )
    with _upload_errors(folder, f"{api.endpoint}/{repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        exposed = private and not api.model_info(repo_id).private
    if exposed:
        raise ValueError(
            f"{repo_id} already exists and is public, so private=True would publish in the open: make it private on "
            "the Hub first, or publish without --private."
        )
    with _upload_errors(folder, f"{api.endpoint}/{repo_id}"):
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            allow_patterns=files,  # exactly the validated files: never checkpoints or pickles
            revision=revision,
            commit_message=message,
        )
    return commit.commit_url


@contextmanager
def _upload_errors(folder: Path, target: str) -> Iterator[None]:
    """Turn whatever the client raises (HTTP, connection, malformed answer) into one clear `PublishError`."""
    try:
        yield
    except Exception as error:
        raise PublishError(
            f"Uploading {folder} to {target} failed: {_reason(error)}. Nothing in {folder} was changed; fix the cause "
            "(token permissions, repo name, connection) and run the same command again."
        ) from error


def _reason(error: BaseException) -> str:
    """The most specific one-line reason: the server's own message when there is one, down the cause chain."""
    messages = []
    while error is not None:
        server_message = getattr(error, "server_message", None)
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        messages.append(" ".join((server_message or first_line).split()).rstrip("."))
        error = error.__cause__
    return redact(": ".join(dict.fromkeys(messages)))
