"""save_pretrained/from_pretrained, Auto classes, Hub code in a process without rnn_lm_hf, pipelines."""

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    pipeline,
)

from rnn_lm_hf import (
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    RNNLMModel,
)
from rnn_lm_hf.modeling_rnn_lm import NotACausalLMError
from tests.conftest import make_config, run_hub_code


HEADS = {
    "AutoModel": RNNLMModel,
    "AutoModelForCausalLM": RNNLMForCausalLM,
    "AutoModelForTokenClassification": RNNLMForTokenClassification,
    "AutoModelForSequenceClassification": RNNLMForSequenceClassification,
}
AUTO = {
    "AutoModel": AutoModel,
    "AutoModelForCausalLM": AutoModelForCausalLM,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
}


@pytest.mark.parametrize("auto_name", list(HEADS))
def test_round_trip_is_exact_for_every_head(tmp_path, cell_type, auto_name):
    model = HEADS[auto_name](make_config(cell_type, num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    for loaded in (HEADS[auto_name].from_pretrained(tmp_path), AUTO[auto_name].from_pretrained(tmp_path)):
        assert type(loaded) is HEADS[auto_name]
        original, reloaded = model.state_dict(), loaded.state_dict()
        assert original.keys() == reloaded.keys()
        for name in original:
            assert torch.equal(original[name], reloaded[name]), name


def test_tied_weights_stay_tied_and_are_stored_once(tmp_path, tiny_config):
    model = RNNLMForCausalLM(tiny_config)
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert "model.embeddings.weight" in stored and "lm_head.weight" not in stored
    loaded = RNNLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embeddings.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)


def test_saved_folder_carries_code_and_full_auto_map(tmp_path, tiny_config):
    RNNLMForCausalLM(tiny_config).save_pretrained(tmp_path)
    assert (tmp_path / "modeling_rnn_lm.py").exists() and (tmp_path / "configuration_rnn_lm.py").exists()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_rnn_lm.RNNLMConfig",
        "AutoModel": "modeling_rnn_lm.RNNLMModel",
        "AutoModelForCausalLM": "modeling_rnn_lm.RNNLMForCausalLM",
        "AutoModelForTokenClassification": "modeling_rnn_lm.RNNLMForTokenClassification",
        "AutoModelForSequenceClassification": "modeling_rnn_lm.RNNLMForSequenceClassification",
    }


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["rnn_lm_hf"] = None  # the package must not be importable: everything comes from the folder
    try:
        import rnn_lm_hf  # noqa: F401
        raise SystemExit("rnn_lm_hf is importable")
    except ImportError:
        pass
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer, pipeline)
    folder = sys.argv[1]
    names = {}
    for auto in (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification,
                 AutoModelForSequenceClassification):
        obj = auto.from_pretrained(folder, trust_remote_code=True)
        assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        names[auto.__name__] = type(obj).__name__
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    expected = torch.load(sys.argv[2], weights_only=True)
    got = model.generate(expected["prompt"], max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected["generated"]), (got, expected["generated"])
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = generator("the writer", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("the writer") and len(text) > len("the writer"), text
    print(names)
    """
)


def test_hub_code_loads_without_the_package(tmp_path, tiny_config, tiny_tokenizer):
    tiny_config.vocab_size = len(tiny_tokenizer)
    model = RNNLMForCausalLM(tiny_config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    prompt = torch.tensor([[5, 6, 7]])
    torch.save(
        {"prompt": prompt, "generated": model.generate(prompt, max_new_tokens=6, do_sample=False)},
        tmp_path / "expected.pt",
    )
    result = run_hub_code(REMOTE_SCRIPT, str(folder), str(tmp_path / "expected.pt"), cwd=tmp_path)
    names = eval(result.stdout.strip().splitlines()[-1])
    assert names == {
        "AutoConfig": "RNNLMConfig",
        "AutoModel": "RNNLMModel",
        "AutoModelForCausalLM": "RNNLMForCausalLM",
        "AutoModelForTokenClassification": "RNNLMForTokenClassification",
        "AutoModelForSequenceClassification": "RNNLMForSequenceClassification",
    }


def test_auto_config_in_process(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "RNNLMConfig"


def test_pipelines_with_in_memory_objects(tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    lm = RNNLMForCausalLM(make_config(vocab_size=vocab)).eval()
    generator = pipeline("text-generation", model=lm, tokenizer=tiny_tokenizer)
    text = generator("the cat", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    new_ids = lm.generate(**tiny_tokenizer("the cat", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert text == "the cat" + tiny_tokenizer.decode(
        new_ids[0, len(tiny_tokenizer("the cat").input_ids) :], skip_special_tokens=True
    )

    id2label = {0: "O", 1: "B-X", 2: "I-X"}
    tagger = RNNLMForTokenClassification(
        make_config(vocab_size=vocab, num_labels=3, id2label=id2label, bidirectional=True)
    ).eval()
    tags = pipeline("token-classification", model=tagger, tokenizer=tiny_tokenizer, ignore_labels=[])("the cat sat")
    encoded = tiny_tokenizer("the cat sat", return_tensors="pt")
    argmax = tagger(**encoded).logits.argmax(-1)[0]
    assert [t["entity"] for t in tags] == [id2label[int(i)] for i in argmax]

    classifier = RNNLMForSequenceClassification(
        make_config(vocab_size=vocab, num_labels=2, id2label={0: "neg", 1: "pos"})
    ).eval()
    label = pipeline("text-classification", model=classifier, tokenizer=tiny_tokenizer)("a fine film")[0]["label"]
    assert (
        label
        == {0: "neg", 1: "pos"}[int(classifier(**tiny_tokenizer("a fine film", return_tensors="pt")).logits.argmax())]
    )

    encoder = RNNLMModel(make_config(vocab_size=vocab)).eval()
    features = pipeline("feature-extraction", model=encoder, tokenizer=tiny_tokenizer)("the cat sat")
    assert torch.tensor(features).shape == (1, len(encoded.input_ids[0]), 32)


@pytest.mark.parametrize(
    ("head", "task"),
    [
        (RNNLMForSequenceClassification, "text-classification"),
        (RNNLMForTokenClassification, "token-classification"),
        (RNNLMModel, "feature-extraction"),
    ],
)
def test_text_generation_from_a_bidirectional_head_folder_names_the_right_task(tmp_path, tiny_tokenizer, head, task):
    """pipeline() tries several classes and concatenated their tracebacks (about 50 lines); one line says it all."""
    model = head(make_config(vocab_size=len(tiny_tokenizer), num_labels=2, bidirectional=True))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(NotACausalLMError) as error:
        pipeline("text-generation", model=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and f"pipeline('{task}'" in message and str(tmp_path) in message
    with pytest.raises(NotACausalLMError, match=f"{head.__name__}.*pipeline\\('{task}'"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    # The folder's encoder still loads alone, and the named pipeline works.
    encoder = AutoModel.from_pretrained(tmp_path)
    base = model if head is RNNLMModel else model.model
    for name, value in base.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[name], value, atol=0, rtol=0, msg=name)
    assert pipeline(task, model=str(tmp_path))("the cat sat")


def test_a_causal_lm_folder_still_loads_into_every_head(tmp_path, tiny_config):
    """Transfer (ULMFiT): an LM's encoder into a tagging or classification head, bidirectional ones included when
    the LM has separate directions (ELMo)."""
    for name, config in {"lm": tiny_config, "bilm": make_config(bidirectional=True, separate_directions=True)}.items():
        lm = RNNLMForCausalLM(config)
        lm.save_pretrained(tmp_path / name)
        for head in (RNNLMModel, RNNLMForTokenClassification, RNNLMForSequenceClassification):
            loaded = head.from_pretrained(tmp_path / name, num_labels=3)
            base = loaded if head is RNNLMModel else loaded.model
            for key, value in lm.model.state_dict().items():
                torch.testing.assert_close(base.state_dict()[key], value, atol=0, rtol=0, msg=f"{name} {key}")
