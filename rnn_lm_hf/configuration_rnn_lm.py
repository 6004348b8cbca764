"""RNN-LM model configuration: the single source of truth for the architecture."""

import difflib
from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class CellType:
    """What the package knows of one recurrent cell type. The modeling file, the model card, `analysis.py`, `bench/`
    and the tests read `CELL_TYPES`: a new cell is one entry here plus its module."""

    name: str  # display name (model card, plots)
    # The module class that runs it: a `torch.nn` recurrent module, or a class of `modeling_rnn_lm.py` with the same
    # interface (batch-first tensor or PackedSequence in, (output, h_n) out; `weight_ih_l0`-style parameter names).
    module: str
    num_states: int  # state tensors per direction: 2 for LSTM (h, c), else 1 (h)
    gates: tuple[str, ...]  # the row blocks of W_ih / W_hh, in the module's order
    citation: str  # BibTeX of the cell's paper (the model card cites it)
    forget_gate: str | None = None  # the gate whose bias starts at 1 (Jozefowicz et al. 2015), if any
    # The weights `weight_drop` masks (DropConnect): the recurrent W_hh, or, for a cell whose state enters no matrix,
    # its gates' input weights W_ih (as AWD-LSTM does for its QRNN).
    weight_drop_on: str = "weight_hh"


# Kept in one place so the error messages and the model agree on what exists.
CELL_TYPES = {
    "rnn": CellType(
        "Elman RNN",
        "RNN",
        1,
        ("h",),
        citation="""@article{elman1990finding,
  title   = {Finding Structure in Time},
  author  = {Elman, Jeffrey L.},
  journal = {Cognitive Science},
  volume  = {14},
  number  = {2},
  pages   = {179--211},
  year    = {1990}
}""",
    ),
    "lstm": CellType(
        "LSTM",
        "LSTM",
        2,
        ("i", "f", "g", "o"),
        citation="""@article{hochreiter1997long,
  title   = {Long Short-Term Memory},
  author  = {Hochreiter, Sepp and Schmidhuber, J{\\"u}rgen},
  journal = {Neural Computation},
  volume  = {9},
  number  = {8},
  pages   = {1735--1780},
  year    = {1997}
}""",
        forget_gate="f",
    ),
    "gru": CellType(
        "GRU",
        "GRU",
        1,
        ("r", "z", "n"),
        citation="""@inproceedings{cho2014learning,
  title     = {Learning Phrase Representations using {RNN} Encoder--Decoder for Statistical Machine Translation},
  author    = {Cho, Kyunghyun and van Merri{\\"e}nboer, Bart and Gulcehre, Caglar and Bahdanau, Dzmitry and Bougares, Fethi and Schwenk, Holger and Bengio, Yoshua},
  booktitle = {Proceedings of EMNLP},
  pages     = {1724--1734},
  year      = {2014}
}""",
    ),
    "mingru": CellType(
        "minGRU",
        "MinGRU",
        1,
        ("z", "h"),
        citation="""@article{feng2024were,
  title   = {Were {RNN}s All We Needed?},
  author  = {Feng, Leo and Tung, Frederick and Ahmed, Mohamed Osama and Bengio, Yoshua and Hajimirsadeghi, Hossein},
  journal = {arXiv preprint arXiv:2410.01201},
  year    = {2024}
}""",
        weight_drop_on="weight_ih",  # no W_hh: DropConnect on the gates' input weights, as AWD-LSTM's QRNN
    ),
}
NONLINEARITIES = ("tanh", "relu")
POOLING_TYPES = ("last", "mean", "max", "concat")
# Chunk prefixes of each tag scheme a CRF can be constrained to (`crf_scheme`); "O" is outside every chunk.
CRF_SCHEMES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


class RNNLMConfig(PretrainedConfig):
    r"""
    Configuration of an [`RNNLMModel`]: a stack of recurrent layers over word embeddings, the classic RNN language
    model (Elman 1990; Mikolov et al. 2010), its gated variants LSTM (Hochreiter & Schmidhuber 1997) and GRU
    (Cho et al. 2014), the parallel-in-time minGRU (Feng et al. 2024), and the same encoder reused for token and
    sequence classification.

    The `rnn` cell is the lecture's equation `h_t = f(W_h h_{t-1} + W_e e_t + b)` with `f` = `rnn_nonlinearity`.

    Args:
        vocab_size (`int`, *optional*, defaults to 10000):
            Number of tokens in the vocabulary (PTB's classic 10k by default).
        hidden_size (`int`, *optional*, defaults to 256):
            Size of the recurrent state `h_t` of every layer (per direction when `bidirectional`).
        embedding_size (`int`, *optional*):
            Size of the input word embeddings `e_t`. `None` means `hidden_size`.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of stacked recurrent layers.
        cell_type (`str`, *optional*, defaults to `"lstm"`):
            A key of `CELL_TYPES`: `"rnn"` (Elman), `"lstm"`, `"gru"` or `"mingru"` (minGRU, Feng et al. 2024: gates
            that read only the input, so training runs in parallel over time; decoding is still one step per token).
        rnn_nonlinearity (`str`, *optional*, defaults to `"tanh"`):
            `f` of the `rnn` cell, `"tanh"` or `"relu"`. Ignored by LSTM and GRU, whose gates fix their own.
        bidirectional (`bool`, *optional*, defaults to `False`):
            Read the sequence in both directions. The two directions are concatenated: `last_hidden_state` is
            `output_size` = 2 x the last layer's size wide. A bidirectional model has no generation cache, and a
            causal LM may be bidirectional only with `separate_directions`.
        separate_directions (`bool`, *optional*, defaults to `False`):
            With `bidirectional`: each direction is its own stack of layers, and a layer reads only the layer below
            in its own direction (ELMo's biLM, Peters et al. 2018), so the backward direction never sees the left
            context, nor the forward the right one, at any depth. This makes a bidirectional language model
            (`RNNLMForCausalLM`: the forward direction predicts the next token, the backward one the previous),
            whose weights load exactly into the same architecture's tagging and classification heads.
        hidden_sizes (`list[int]`, *optional*):
            One state size per layer, e.g. AWD-LSTM's `[1150, 1150, 400]`, so a narrow last layer feeds a tied
            softmax without a projection. `None` means `hidden_size` for every layer.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the embeddings, between recurrent layers and on the last layer's output (Zaremba et al. 2014
            apply it to every non-recurrent connection), a new mask per token. In `[0, 1)`.
        dropout_embedding (`float`, *optional*, defaults to 0.0):
            Embedding dropout (Gal & Ghahramani 2016; AWD-LSTM's `dropoute`): drops whole word types from the
            embedding matrix for a forward pass, every occurrence of a dropped word at once, rescaling the kept rows.
        dropout_input (`float`, *optional*, defaults to 0.0):
            Locked (variational) dropout on the embeddings: one mask per sequence, shared over time (`dropouti`).
        dropout_hidden (`float`, *optional*, defaults to 0.0):
            Locked dropout between recurrent layers (`dropouth`).
        dropout_output (`float`, *optional*, defaults to 0.0):
            Locked dropout on the last layer's output, before the softmax or the task head (`dropout`).
        weight_drop (`float`, *optional*, defaults to 0.0):
            DropConnect on the hidden-to-hidden weights `W_hh` (Wan et al. 2013; AWD-LSTM, Merity et al. 2018): a new
            mask per training forward, shared by every time step, so the fused cuDNN kernel still runs. None in eval.
            A cell whose state enters no matrix masks its gates' input weights instead (`CellType.weight_drop_on`).
        output_projection (`bool`, *optional*, defaults to `True`):
            When `embedding_size != hidden_size`, project the last hidden state to `embedding_size` before the output
            layer, so the output layer can share the input embedding matrix.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Share the input embedding and output softmax weights (Press & Wolf 2017; Inan et al. 2017). Needs the
            output layer's input size to equal `embedding_size`: equal sizes, or `output_projection=True`.
        softmax_cutoffs (`list[int]`, *optional*):
            An adaptive softmax for the causal LM (Grave et al. 2017; AWD-LSTM's split cross-entropy): the token ids
            below `softmax_cutoffs[0]` and one entry per cluster `[cutoffs[i], cutoffs[i+1])` (the last ends at
            `vocab_size`) share a head softmax, and each cluster's tokens have a softmax of their own, so a training
            step scores a rare token's cluster only at the positions whose target is in it. It needs ids in frequency
            order, as the package's word and char tokenizers make them: `[2000, 5000]` puts 87% of PTB's tokens in
            the head, and a 2x200 LM then trains 1.45x the steps per minute on a CPU thread (BENCHMARKS 9). The
            output layer's weights and their tying are unchanged; one score per cluster is added. `logits` are then
            the log-probabilities of the whole vocabulary (a training forward with labels returns none). `None`: one
            softmax over the vocabulary.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Embeddings and output layer are drawn from `uniform(-initializer_range, initializer_range)`, the classic
            RNN-LM init (Zaremba et al. 2014 use 0.1 for the small model).
        init_recurrent_uniform (`bool`, *optional*, defaults to `False`):
            Draw the recurrent weights from the same uniform as well (the Zaremba recipe) instead of
            xavier-uniform input weights and orthogonal recurrent weights.
        start_after_eos (`bool`, *optional*, defaults to `False`):
            A fresh state (no cache) first reads an `eos_token_id`, the separator every line of a PTB-style stream
            follows in training: a prompt then starts where training saw texts start, instead of from a zero state
            the model rarely saw (a learned initial state, as GPT-2 starts unconditional text after its
            `<|endoftext|>`). Outputs keep the caller's positions.
        classifier_dropout (`float`, *optional*):
            Dropout before the tagging/classification layer. `None` means `dropout`.
        char_cnn_filters (`int`, *optional*, defaults to 0):
            Character-aware tokens (Kim et al. 2016; CharacterBERT): a character CNN with this many filters reads
            every token's spelling and its max-pooled features join the token embedding at the first layer's input,
            so rare words and sub-words share what their letters say (capitals, digits, suffixes). The spelling of
            each vocabulary entry is stored with the weights (`RNNLMModel.set_token_spellings`). 0: off.
        char_embedding_size (`int`, *optional*, defaults to 16):
            Width of the character embeddings the CNN reads.
        max_token_chars (`int`, *optional*, defaults to 16):
            Characters of a token the CNN reads (longer tokens are cut).
        char_vocab_size (`int`, *optional*, defaults to 0):
            Characters the CNN knows, padding included; set from the tokenizer's vocabulary.
        layer_mix (`bool`, *optional*, defaults to `False`):
            Tagging and classification heads read a learned mix of every layer's output instead of the last layer's
            (ELMo's scalar mix: `gamma * sum_l softmax(w)_l h_l`), so a pretrained encoder's lower, more syntactic
            layers can serve the task. Needs every layer to have the same size.
        head_rnn_size (`int`, *optional*, defaults to 0):
            ELMo's and Flair's task model (Peters et al. 2018, Akbik et al. 2018): a one-layer BiLSTM of this width per
            direction between the encoder and the tagging/classification output layer. It reads the encoder's
            features (the layer mix, Flair's word features) and is trained for the task, so a frozen pretrained
            encoder (`--freeze_encoder`) still gets a task-specific contextual layer. 0: none, the output layer reads
            the encoder's features.
        head_embedding_size (`int`, *optional*, defaults to 0):
            ELMo's `[x_k; ELMo_k]` (Peters et al. 2018, 3.3): the head RNN also reads every token through embeddings
            of its own, this wide, learnt for the task from scratch, so a frozen pretrained encoder's features add to a
            task model's word representation instead of replacing it. Needs `head_rnn_size`. 0: none.
        classifier_pooling (`str`, *optional*, defaults to `"last"`):
            How the sequence head summarises a sentence: `"last"` (state at the last real token; with
            `bidirectional`, concatenated with the backward state at the first real token), `"mean"` or `"max"` over
            the real tokens, or `"concat"`: last ‖ max ‖ mean, 3x `head_feature_size` features (ULMFiT, Howard & Ruder 2018).
        word_separator_id (`int`, *optional*):
            Flair's contextual string embeddings (Akbik et al. 2018) for a bidirectional, character-level tagger:
            the token head reads, at each character, the forward state there and the backward state at the first
            character of its word, the word ending at every token with this id (the space character's) or at padding.
            Label each word at its last character. `None`: each position's own states.
        use_crf (`bool`, *optional*, defaults to `False`):
            Token classification: a linear-chain CRF over the tags (Lample et al. 2016). Training maximises the
            likelihood of the whole tag sequence; in eval mode `logits` are then max-marginals, whose argmax is the
            Viterbi path, so the token-classification pipeline returns Viterbi tags.
        crf_scheme (`str`, *optional*):
            With `use_crf`: forbid the moves the tag scheme does not allow, one of `"IOB1"`, `"IOB2"`, `"BIOES"`
            (e.g. `O` -> `I-PER` in IOB2). `None`: every move allowed, the CRF learns the transitions alone.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the recurrent state so generation costs one step per new token.
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token id.
        bos_token_id (`int`, *optional*, defaults to 1):
            Beginning-of-sequence token id.
        eos_token_id (`int`, *optional*, defaults to 2):
            End-of-sequence token id (also the end-of-line token of PTB-style corpora).

    Example:

    ```python
    >>> from rnn_lm_hf import RNNLMConfig, RNNLMForCausalLM

    >>> config = RNNLMConfig(vocab_size=10000, hidden_size=200, num_hidden_layers=2, cell_type="lstm")
    >>> model = RNNLMForCausalLM(config)
    >>> model.config.cell_type
    'lstm'
    ```
    """

    model_type = "rnn_lm"
    # The recurrent state is generation-time only: Trainer.predict must not try to gather it.
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # Fields that shape or define the weights: a pretrained checkpoint fixes them, and overriding one when loading it
    # would silently break the transfer (the fine-tuning scripts refuse it).
    architecture_fields = (
        "vocab_size",
        "char_cnn_filters",
        "char_embedding_size",
        "max_token_chars",
        "char_vocab_size",
        "hidden_size",
        "hidden_sizes",
        "embedding_size",
        "num_hidden_layers",
        "cell_type",
        "rnn_nonlinearity",
        "bidirectional",
        "separate_directions",
        "output_projection",
        "softmax_cutoffs",
    )

    def __init__(
        self,
        vocab_size: int = 10000,
        hidden_size: int = 256,
        embedding_size: int | None = None,
        num_hidden_layers: int = 2,
        hidden_sizes: list[int] | None = None,
        cell_type: str = "lstm",
        rnn_nonlinearity: str = "tanh",
        bidirectional: bool = False,
        separate_directions: bool = False,
        dropout: float = 0.0,
        dropout_embedding: float = 0.0,
        dropout_input: float = 0.0,
        dropout_hidden: float = 0.0,
        dropout_output: float = 0.0,
        weight_drop: float = 0.0,
        output_projection: bool = True,
        tie_word_embeddings: bool = True,
        softmax_cutoffs: list[int] | None = None,
        initializer_range: float = 0.1,
        init_recurrent_uniform: bool = False,
        start_after_eos: bool = False,
        classifier_dropout: float | None = None,
        classifier_pooling: str = "last",
        char_cnn_filters: int = 0,
        char_embedding_size: int = 16,
        max_token_chars: int = 16,
        char_vocab_size: int = 0,
        layer_mix: bool = False,
        head_rnn_size: int = 0,
        head_embedding_size: int = 0,
        word_separator_id: int | None = None,
        use_crf: bool = False,
        crf_scheme: str | None = None,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.embedding_size = embedding_size
        self.num_hidden_layers = num_hidden_layers
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else None
        self.cell_type = cell_type
        self.rnn_nonlinearity = rnn_nonlinearity
        self.bidirectional = bidirectional
        self.separate_directions = separate_directions
        self.dropout = dropout
        self.dropout_embedding = dropout_embedding
        self.dropout_input = dropout_input
        self.dropout_hidden = dropout_hidden
        self.dropout_output = dropout_output
        self.weight_drop = weight_drop
        self.output_projection = output_projection
        self.tie_word_embeddings = tie_word_embeddings
        self.softmax_cutoffs = softmax_cutoffs
        self.initializer_range = initializer_range
        self.init_recurrent_uniform = init_recurrent_uniform
        self.start_after_eos = start_after_eos
        self.classifier_dropout = classifier_dropout
        self.classifier_pooling = classifier_pooling
        self.char_cnn_filters = char_cnn_filters
        self.char_embedding_size = char_embedding_size
        self.max_token_chars = max_token_chars
        self.char_vocab_size = char_vocab_size
        self.layer_mix = layer_mix
        self.head_rnn_size = head_rnn_size
        self.head_embedding_size = head_embedding_size
        self.word_separator_id = word_separator_id
        self.use_crf = use_crf
        self.crf_scheme = crf_scheme
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(**kwargs)
        self.check_architecture()

    def check_architecture(self) -> None:
        """Raise a `ValueError` naming the field and its allowed values for any impossible architecture."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            _check_positive_int(name, getattr(self, name))
        if self.embedding_size is not None:
            _check_positive_int("embedding_size", self.embedding_size)
        if self.hidden_sizes is not None:
            if not isinstance(self.hidden_sizes, list) or len(self.hidden_sizes) != self.num_hidden_layers:
                raise ValueError(
                    f"`hidden_sizes` must list one size per layer ({self.num_hidden_layers} = num_hidden_layers), "
                    f"got {self.hidden_sizes!r}; or leave it None to use hidden_size={self.hidden_size} everywhere."
                )
            for size in self.hidden_sizes:
                _check_positive_int("hidden_sizes", size)
        _check_choice("cell_type", self.cell_type, tuple(CELL_TYPES))
        _check_choice("rnn_nonlinearity", self.rnn_nonlinearity, NONLINEARITIES)
        _check_choice("classifier_pooling", self.classifier_pooling, POOLING_TYPES)
        for name in ("char_cnn_filters", "char_vocab_size", "head_rnn_size", "head_embedding_size"):
            _check_positive_int(name, getattr(self, name), minimum=0)
        if self.char_cnn_filters:
            _check_positive_int("char_embedding_size", self.char_embedding_size)
            _check_positive_int("max_token_chars", self.max_token_chars)
        if self.separate_directions and not self.bidirectional:
            raise ValueError(
                "`separate_directions=True` splits the two directions of a bidirectional model: set "
                "bidirectional=True as well, or separate_directions=False."
            )
        if self.layer_mix and len(set(self.layer_hidden_sizes)) > 1:
            raise ValueError(
                f"`layer_mix=True` mixes equally wide layers, but hidden_sizes is {self.hidden_sizes}: use one size "
                "for every layer, or layer_mix=False."
            )
        if self.head_embedding_size and not self.head_rnn_size:
            raise ValueError(
                f"`head_embedding_size={self.head_embedding_size}` gives the head RNN its own token embeddings, but "
                "there is no head RNN: set head_rnn_size as well (e.g. 128), or head_embedding_size=0."
            )
        if self.word_separator_id is not None and not self.bidirectional:
            raise ValueError(
                "`word_separator_id` reads the backward state at each word's first character: it needs "
                "bidirectional=True (a character-level encoder or bidirectional LM), or word_separator_id=None."
            )
        if self.crf_scheme is not None:
            _check_choice("crf_scheme", self.crf_scheme, tuple(CRF_SCHEMES))
        for name in ("dropout", "dropout_embedding", "dropout_input", "dropout_hidden", "dropout_output"):
            _check_probability(name, getattr(self, name))
        _check_probability("weight_drop", self.weight_drop)
        if self.classifier_dropout is not None:
            _check_probability("classifier_dropout", self.classifier_dropout)
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0):
            raise ValueError(f"`initializer_range` must be a positive number, got {self.initializer_range!r}.")
        if self.tie_word_embeddings and self.lm_input_size != self.input_size:
            raise ValueError(
                f"`tie_word_embeddings=True` cannot work: the output layer reads {self.lm_input_size} features but the "
                f"embedding has {self.input_size}. Allowed: embedding_size == hidden_size, or output_projection=True, "
                "or tie_word_embeddings=False."
            )
        if isinstance(self.softmax_cutoffs, int) and not isinstance(self.softmax_cutoffs, bool):
            self.softmax_cutoffs = [self.softmax_cutoffs]  # `softmax_cutoffs=2000` in --config_overrides
        if self.softmax_cutoffs is not None:
            cutoffs = self.softmax_cutoffs
            ints = isinstance(cutoffs, list) and cutoffs and all(isinstance(c, int) for c in cutoffs)
            if not (ints and cutoffs[0] > 0 and all(a < b for a, b in zip(cutoffs, [*cutoffs[1:], self.vocab_size]))):
                raise ValueError(
                    f"`softmax_cutoffs` must be increasing token ids in (0, vocab_size={self.vocab_size}), e.g. "
                    f"[2000, 5000] (in --config_overrides: softmax_cutoffs=2000/5000), or None; got {cutoffs!r}."
                )
        if self.start_after_eos and self.eos_token_id is None:
            raise ValueError("`start_after_eos=True` needs an `eos_token_id`; set one, or start_after_eos=False.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not (isinstance(token_id, int) and 0 <= token_id < self.vocab_size):
                raise ValueError(
                    f"`{name}` must be an int in [0, vocab_size={self.vocab_size}) or None, got {token_id!r}."
                )

    def check_causal_lm(self) -> None:
        """A causal LM reads left to right only: called by the LM head, so encoders may stay bidirectional."""
        if self.bidirectional and not self.separate_directions:
            raise ValueError(
                "`bidirectional=True` is not allowed for a causal language model (it would see the next token). "
                "Allowed: bidirectional=False for RNNLMForCausalLM; bidirectional=True only for RNNLMModel, "
                "RNNLMForTokenClassification and RNNLMForSequenceClassification; or a bidirectional LM with "
                "separate_directions=True, whose directions never see each other's context."
            )

    def update_from_string(self, update_str: str) -> None:
        """Apply `"hidden_size=256,cell_type=gru"` overrides (`--config_overrides`), then validate.

        transformers' version casts each value to the type of the current one, so it cannot set a field that is
        None by default (`embedding_size`, `classifier_dropout`); those values are parsed as int/float/None/str.
        A list field takes its items separated by `/`: `hidden_sizes=1150/1150/400`.
        """
        for key, value in self.parse_overrides(update_str).items():
            item = f"{key}={value}"
            if not hasattr(self, key):
                close = difflib.get_close_matches(key, self.to_dict(), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ValueError(
                    f"config override {item!r}: {hint}expected key=value with a field of RNNLMConfig, "
                    "e.g. 'hidden_size=256,cell_type=gru'."
                )
            current = getattr(self, key)
            if current is None or isinstance(current, list):
                setattr(self, key, _parse_value(value))
                continue
            try:
                super().update_from_string(f"{key}={value}")
            except ValueError:
                kind = {"int": "an int", "float": "a float", "bool": "true or false"}.get(
                    type(current).__name__, "a str"
                )
                raise ValueError(
                    f"config override {item!r}: `{key}` takes {kind} (now {current!r}), got {value!r}."
                ) from None
        self.check_architecture()

    @staticmethod
    def parse_overrides(update_str: str | None) -> dict[str, str]:
        """`"hidden_size=256,cell_type=gru"` as `{"hidden_size": "256", "cell_type": "gru"}` (values unparsed): the
        one reader of the override syntax. Raises a `ValueError` for an item without `=`."""
        overrides = {}
        for item in (update_str or "").split(","):
            if not item.strip():
                continue
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not key:
                raise ValueError(
                    f"config override {item.strip()!r}: expected key=value with a field of RNNLMConfig, "
                    "e.g. 'hidden_size=256,cell_type=gru'."
                )
            overrides[key] = value
        return overrides

    @classmethod
    def merge_overrides(cls, update_str: str | None, changes: dict) -> str:
        """`update_str` with `changes` set (added, or replacing the same keys), in the same syntax."""
        merged = {**cls.parse_overrides(update_str), **{key: str(value) for key, value in changes.items()}}
        return ",".join(f"{key}={value}" for key, value in merged.items())

    # Derived values, computed here once so modules never re-derive them.
    @property
    def input_size(self) -> int:
        """Width of the embeddings fed to the first recurrent layer."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def layer_hidden_sizes(self) -> list[int]:
        """The state size of each layer."""
        return self.hidden_sizes if self.hidden_sizes is not None else [self.hidden_size] * self.num_hidden_layers

    def layer_input_size(self, layer_idx: int) -> int:
        """Width of what layer `layer_idx` reads: the embeddings, or the previous layer's output."""
        if layer_idx == 0:
            return self.input_size + self.char_cnn_filters  # the token embedding, then its spelling's features
        return self.layer_hidden_sizes[layer_idx - 1] * (1 if self.separate_directions else self.num_directions)

    @property
    def output_size(self) -> int:
        """Width of the last recurrent layer's output, both directions concatenated (`last_hidden_state`): a
        bidirectional encoder's features are `2 * hidden_size` wide, as in torch's `nn.LSTM`, ELMo and Flair."""
        return self.layer_hidden_sizes[-1] * self.num_directions

    @property
    def head_feature_size(self) -> int:
        """Width of the features a tagging/classification head reads at each position: the head RNN's output (both
        directions) when there is one, else the encoder's."""
        return 2 * self.head_rnn_size if self.head_rnn_size else self.output_size

    @property
    def pooled_size(self) -> int:
        """Width of the sequence head's pooled features: last ‖ max ‖ mean for `"concat"`, one summary otherwise."""
        return self.head_feature_size * (3 if self.classifier_pooling == "concat" else 1)

    @property
    def head_dropout(self) -> float:
        """Dropout before the tagging/classification head: `classifier_dropout`, or `dropout` when that is None."""
        return self.classifier_dropout if self.classifier_dropout is not None else self.dropout

    @property
    def lm_feature_size(self) -> int:
        """Width of what the LM softmax reads from one direction: the last layer's size (a bidirectional LM has a
        softmax per direction, sharing its weights)."""
        return self.layer_hidden_sizes[-1]

    @property
    def needs_projection(self) -> bool:
        """Whether the LM head reads the recurrent output through a linear projection to `embedding_size` (AWD-LSTM's
        smaller last layer makes it unnecessary)."""
        return self.output_projection and self.lm_feature_size != self.input_size

    @property
    def lm_input_size(self) -> int:
        """Width of the features the LM output layer reads (after the optional projection)."""
        return self.input_size if self.output_projection else self.lm_feature_size

    @property
    def cell(self) -> CellType:
        """The entry of `cell_type` in the table of cell types."""
        return CELL_TYPES[self.cell_type]

    @property
    def num_states(self) -> int:
        """Recurrent state tensors per layer: (h, c) for LSTM, h otherwise."""
        return self.cell.num_states

    @property
    def layer_types(self) -> list[str]:
        # `DynamicCache(config=...)` reads this to build one recurrent (linear-attention) cache layer per layer.
        return ["linear_attention"] * self.num_hidden_layers


def _parse_value(value: str) -> int | float | str | list | None:
    # "1150/1150/400" -> [1150, 1150, 400]: commas already separate the overrides.
    return [_parse_scalar(part) for part in value.split("/")] if "/" in value else _parse_scalar(value)


def _parse_scalar(value: str) -> int | float | str | None:
    if value.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.")


def _check_probability(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a float in [0, 1), got {value!r}.")


__all__ = ["RNNLMConfig"]
