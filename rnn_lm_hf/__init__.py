"""rnn-lm-hf: classic recurrent language models (Elman RNN, LSTM, GRU) as Hugging Face transformers models."""

import transformers

from .configuration_rnn_lm import RNNLMConfig
from .modeling_rnn_lm import (
    MODEL_CLASSES,
    RNNLMCache,
    RNNLMForCausalLM,
    RNNLMForSequenceClassification,
    RNNLMForTokenClassification,
    RNNLMModel,
    RNNLMPreTrainedModel,
    RNNLMStaticCache,
)


__version__ = "0.1.0"

# In-process registration with every Auto class; `save_pretrained` then writes the full `auto_map` (Hub code).
transformers.AutoConfig.register(RNNLMConfig.model_type, RNNLMConfig, exist_ok=True)
RNNLMConfig.register_for_auto_class()
for _auto_name, _model_class in MODEL_CLASSES.items():
    getattr(transformers, _auto_name).register(RNNLMConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_name)

__all__ = [
    "MODEL_CLASSES",
    "RNNLMCache",
    "RNNLMStaticCache",
    "RNNLMConfig",
    "RNNLMPreTrainedModel",
    "RNNLMModel",
    "RNNLMForCausalLM",
    "RNNLMForTokenClassification",
    "RNNLMForSequenceClassification",
]
