"""Shared fixtures: tiny configs for every cell type and a tokenizer built offline with `tokenizers`."""

import os
import subprocess
import sys


# Nothing in the test suite may touch the network (CI has none): set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from rnn_lm_hf import RNNLMConfig  # noqa: E402
from rnn_lm_hf.configuration_rnn_lm import CELL_TYPES  # noqa: E402
from rnn_lm_hf.modeling_rnn_lm import CACHE_FIELD  # noqa: E402


CELL_TYPES = list(CELL_TYPES)  # every cell of the package's table
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_TEXT = [
    "the writer of the books is here .",
    "the keys to the cabinet are on the table .",
    "a cat sat on the mat and the dogs ran away .",
    "we generate text by sampling one token at a time .",
] * 4


def make_config(cell_type: str = "lstm", **overrides) -> RNNLMConfig:
    """vocab 99, hidden 32, 2 layers: the transformers ModelTester sizes."""
    kwargs = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "cell_type": cell_type}
    return RNNLMConfig(**{**kwargs, **overrides})


def load_bench_script(name: str):
    """bench/<name>.py as a module: bench/ is a folder of scripts, not a package."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_hub_code(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -c script args` in a fresh process that cannot import rnn_lm_hf from the checkout (no PYTHONPATH, a
    tmp cwd) and has an empty offline HF cache: it must load the saved folder as Hub code. Fails on a non-zero exit."""
    env = {**os.environ, "HF_HOME": str(cwd / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def cache_of(output):
    """The recurrent cache of an output: field `cache` on transformers 5.24+, `past_key_values` before."""
    return getattr(output, CACHE_FIELD)


@pytest.fixture(params=CELL_TYPES)
def cell_type(request) -> str:
    return request.param


@pytest.fixture
def tiny_config(cell_type) -> RNNLMConfig:
    return make_config(cell_type)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE: new tokens carry their own leading space, so pipelines join prompt + text right."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TINY_TEXT, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    # GPU tests need CUDA; skip them cleanly elsewhere instead of failing.
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
