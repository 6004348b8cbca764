"""rnn-lm-hf: classic recurrent language models (Elman RNN, LSTM, GRU) as Hugging Face transformers models."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_rnn_lm import RNNLMConfig
from .modeling_rnn_lm import (
    RNNLMCache,
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    RNNLMModel,
    RNNLMPreTrainedModel,
)


__version__ = "0.1.0"

# Auto class of each model class: in-process registration, and the `auto_map` written into saved folders.
AUTO_CLASSES = {
    "AutoModel": (AutoModel, RNNLMModel),
    "AutoModelForCausalLM": (AutoModelForCausalLM, RNNLMForCausalLM),
    "AutoModelForTokenClassification": (AutoModelForTokenClassification, RNNLMForTokenClassification),
    "AutoModelForSequenceClassification": (AutoModelForSequenceClassification, RNNLMForSequenceClassification),
}

AutoConfig.register(RNNLMConfig.model_type, RNNLMConfig, exist_ok=True)
RNNLMConfig.register_for_auto_class()
for _auto_name, (_auto_class, _model_class) in AUTO_CLASSES.items():
    _auto_class.register(RNNLMConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_name)

__all__ = [
    "AUTO_CLASSES",
    "RNNLMCache",
    "RNNLMConfig",
    "RNNLMPreTrainedModel",
    "RNNLMModel",
    "RNNLMForCausalLM",
    "RNNLMForTokenClassification",
    "RNNLMForSequenceClassification",
]
