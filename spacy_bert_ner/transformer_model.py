"""The transformer model the package registers (`spacy_bert_ner.TransformerModel.v1`):
spacy-transformers' `TransformerModel` with a faster forward pass (word-piece strings read from
the tokenizer, alignment and split by doc in array operations over the batch), a faster
prediction and a faster optimizer step.
"""

import os
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import numpy
import torch
from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.tokens import Doc, Span
from spacy_transformers.align import get_alignment
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData, WordpieceBatch
from spacy_transformers.layers import TransformerModel
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.truncate import truncate_oversize_splits
from spacy_transformers.util import log_batch_size, log_gpu_memory, maybe_flush_pytorch_cache
from thinc.api import Optimizer, torch2xp
from thinc.types import Ints1d, Ints3d, Ragged
from transformers import BatchEncoding
from transformers.file_utils import ModelOutput

from .encoders import ExactConfigHFShim, load_encoder
from .optimizers import update_all
from .window_batches import encode


class ProcessLock:
    """A `threading.Lock` with the id of the process that made it; it pickles and copies as a new
    lock (a lock cannot be pickled, and a copy must not share the original's turns)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def __reduce__(self) -> Tuple[type, Tuple[()]]:
        return (ProcessLock, ())


# Copied from spacy-transformers 1.4.0 (the pinned range is >=1.4.0,<1.5.0):
# `spacy_transformers/layers/transformer_model.py`'s `forward` (in `forward` here) and the
# behaviour of `huggingface_tokenize`, `align.get_alignment_via_offset_mapping` and
# `split_by_doc`, rewritten batch-wise. Copied rather than wrapped because upstream's versions
# loop over every token of the batch in Python and offer no hook to replace those steps; keep
# them in step with upstream when the pin moves (tests/test_transformer_model.py compares both).
class FastTransformerModel(TransformerModel):
    """spacy-transformers' `TransformerModel`, with these changes:

    - Its forward pass (`forward`) is spacy-transformers', with the word pieces aligned to the
      tokens (`align_word_pieces`) and the output split by doc (`split_by_doc`) in array
      operations, where spacy-transformers builds a dict of every token of the batch and a set
      per token, and the word-piece strings read from a fast tokenizer's encodings (`tokenize`);
      the results are the same, except that a SentencePiece-style word piece ("▁Paris") is not
      also given to the token before it, and that windows with more word pieces than the encoder
      takes are warned about (`warn_truncated`).
    - `init` loads the encoder with `encoders.load_encoder`, which also loads a fast tokenizer
      saved without its SentencePiece model (a DeBERTa-v2 `tokenizer.json` alone), and a saved
      encoder loads with its exact config (`encoders.ExactConfigHFShim`: spacy-transformers'
      turns a `layer_norm_eps` of 1e-12 into 0).
    - `predict` runs under `torch.inference_mode` (no autograd bookkeeping at all: ~10% faster on
      CPU than the `no_grad` thinc uses), one thread at a time: thinc's `PyTorchShim.predict`
      puts the module in eval mode and back in train mode, so a forward in another thread
      meanwhile would run with dropout. Predictions of one model take turns on the model's lock
      (a web server calling `nlp.pipe` from threads gets the same entities as one thread).
      In a forked child (`nlp.pipe(texts, n_process=N)` on Linux) the first prediction gives
      the model a new lock (the parent's may have been held at the fork) and sets torch to one
      thread: once the parent has used OpenMP's thread pool, GNU libgomp hangs forever in a
      forked child's first multi-threaded operation. Spawned children unpickle the model with a
      new lock of their own (`ProcessLock`) and keep their threads.
      `predict` is what the component calls to annotate docs (`nlp(text)`, `nlp.pipe`,
      evaluation during training); `begin_update`, the training path, keeps autograd.
    - `finish_update` updates all the encoder's parameters in one fused step when the optimizer
      is `spacy_bert_ner.Adam.v1` or `.v2` (`optimizers.update_all`: thinc's Adam arithmetic in
      torch's fused AdamW kernel, on CPU and GPU), and as thinc does otherwise.

    A subclass rather than a wrapping thinc layer, because the `transformer` component and its
    listeners use the model's own attributes (`set_transformer`, `tokenizer`, `transformer`, the
    init configs) and spacy-transformers checks for a `TransformerModel`. Defined at module level,
    so the pipeline pickles (`nlp.pipe(n_process=...)` under the spawn start method).

    `TransformerModel.copy()` (used by `nlp.replace_listeners`) returns a plain `TransformerModel`:
    a copied transformer runs as spacy-transformers' own does.
    """

    def __init__(
        self,
        name: str,
        get_spans: Callable,
        tokenizer_config: Optional[Dict[str, Any]] = None,
        transformer_config: Optional[Dict[str, Any]] = None,
        mixed_precision: bool = False,
        grad_scaler_config: Optional[Dict[str, Any]] = None,
    ) -> None:
        tokenizer_config = dict(tokenizer_config or {})
        transformer_config = dict(transformer_config or {})
        super().__init__(
            name,
            get_spans,
            tokenizer_config=tokenizer_config,
            transformer_config=transformer_config,
            mixed_precision=mixed_precision,
            grad_scaler_config=dict(grad_scaler_config or {}),
        )
        self._func = forward
        self.init = init
        # What `init` loads the encoder with (spacy-transformers reads the same settings back
        # from its shim's private state).
        self.init_configs = (tokenizer_config, transformer_config)
        # The same shim, loading the saved config exactly (it adds no state of its own).
        self.layers[0].shims[0].__class__ = ExactConfigHFShim
        self._predict_lock = ProcessLock()

    def predict(self, X: Any) -> Any:
        if self._predict_lock.pid != os.getpid():  # the first prediction in a forked child
            self._predict_lock = ProcessLock()
            torch.set_num_threads(1)
        with self._predict_lock.lock, torch.inference_mode():
            return super().predict(X)

    def finish_update(self, optimizer: Optimizer) -> None:
        if not update_all(self, optimizer):
            super().finish_update(optimizer)


def init(model: TransformerModel, X: Any = None, Y: Any = None) -> None:
    """spacy-transformers' `init`: load the encoder (`encoders.load_encoder`, which also loads a
    fast tokenizer saved without its SentencePiece model) and set the model's width from a
    forward pass. spacy-transformers runs that pass over the spans of the sample docs `X`, whose
    output it drops; two short texts tell the width as well."""
    if model.attrs["has_transformer"]:
        return
    tokenizer_config, transformer_config = cast(FastTransformerModel, model).init_configs
    hf_model = load_encoder(model.attrs["name"], dict(tokenizer_config), dict(transformer_config))
    model.attrs["set_transformer"](model, hf_model)
    wordpieces = WordpieceBatch.from_batch_encoding(
        tokenize(model.tokenizer, ["hello world", "foo bar"])
    )
    model.layers[0].initialize(X=wordpieces)
    model_output = model.layers[0].predict(wordpieces)
    model.set_dim("nO", model_output.last_hidden_state.shape[-1])


def forward(
    model: TransformerModel, docs: List[Doc], is_train: bool
) -> Tuple[FullTransformerBatch, Callable]:
    """spacy-transformers' forward pass (`spacy_transformers.layers.transformer_model.forward`),
    with the texts tokenized by `tokenize`, the word pieces aligned to tokens by
    `align_word_pieces` and the output split by doc as it is made (`split_by_doc`). The rest is
    spacy-transformers' code."""
    tokenizer = model.tokenizer
    get_spans = model.attrs["get_spans"]
    transformer = model.layers[0]
    logger = model.attrs.get("logger")  # spacy-transformers' `set_logger`, to debug GPU memory

    nested_spans = get_spans(docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    maybe_flush_pytorch_cache(chance=model.attrs.get("flush_cache_chance", 0))
    if logger:
        log_gpu_memory(logger, "begin forward")
    batch_encoding = tokenize(tokenizer, [span.text for span in flat_spans])
    wordpieces = WordpieceBatch.from_batch_encoding(batch_encoding)
    if logger:
        log_batch_size(logger, wordpieces, is_train)
    if "offset_mapping" in batch_encoding:
        align = align_word_pieces(flat_spans, batch_encoding["offset_mapping"])
    else:
        align = get_alignment(flat_spans, wordpieces.strings, tokenizer.all_special_tokens)
    truncated, align_kept = truncate_oversize_splits(wordpieces, align, tokenizer.model_max_length)
    if truncated is not wordpieces:
        warn_truncated(model, wordpieces, align, align_kept)
    wordpieces, align = truncated, align_kept
    model_output, bp_tensors = encode(transformer, wordpieces, is_train)
    if logger:
        log_gpu_memory(logger, "after forward")
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align
    )
    output.cached_doc_data = split_by_doc(output)

    def backprop_transformer(d_output: FullTransformerBatch) -> List[Doc]:
        if logger:
            log_gpu_memory(logger, "Begin backprop")
        bp_tensors(d_output.model_output)
        if logger:
            log_gpu_memory(logger, "After backprop")
        return docs

    return output, backprop_transformer


def warn_truncated(
    model: TransformerModel, wordpieces: WordpieceBatch, align: Ragged, kept: Ragged
) -> None:
    """Warn, once per model, that windows had more word pieces than the encoder takes:
    spacy-transformers drops the pieces past the tokenizer's `model_max_length` from each window,
    and a token whose pieces were all dropped gets a vector of zeros from the transformer."""
    lost = int(((align.lengths > 0) & (kept.lengths == 0)).sum())
    if not lost or model.attrs.get("warned_truncation"):
        return
    model.attrs["warned_truncation"] = True
    get_spans = model.attrs["get_spans"]  # strided_spans.v1 gives a partial: its settings
    settings = getattr(get_spans, "keywords", None) or get_spans
    warnings.warn(
        f"[bert_ner] {lost} of {len(align.lengths)} tokens got no word pieces: a window of "
        f"spaCy tokens had {max(wordpieces.lengths)} word pieces, and the encoder takes "
        f"{model.tokenizer.model_max_length} (its tokenizer's model_max_length), so the rest were "
        "dropped and those tokens are tagged from the casing features alone. Make the windows "
        "shorter: components.transformer.model.get_spans.window and .stride (in spaCy tokens; "
        f"now {settings}).",
        stacklevel=2,
    )


def tokenize(tokenizer: Any, texts: List[str]) -> BatchEncoding:
    """spacy-transformers' `huggingface_tokenize`, with a fast tokenizer's word-piece strings read
    from its encodings, where spacy-transformers converts the ids back to strings, a sequence at a
    time (a tenth of the host's work in prediction once the encoder is fast). The same strings."""
    if not getattr(tokenizer, "is_fast", False):  # a PreTrainedTokenizerFast has encodings
        return huggingface_tokenize(tokenizer, texts)
    token_data = tokenizer(
        texts,
        add_special_tokens=True,
        return_attention_mask=True,
        return_offsets_mapping=True,
        return_tensors="np",
        return_token_type_ids=None,
        padding="longest",
    )
    token_data["input_texts"] = [encoding.tokens for encoding in token_data.encodings]
    token_data["pad_token"] = tokenizer.pad_token
    return token_data


def align_word_pieces(spans: List[Span], offset_mapping: Ints3d) -> Ragged:
    """`spacy_transformers.align.get_alignment_via_offset_mapping`: for each token of the spans'
    docs (numbered by `doc_offsets`), the indices of the word pieces that overlap
    it in the batch's flattened (padded) word pieces, in array operations over the whole batch
    instead of a dict of every token and a set per token.

    A token owns its characters (a whitespace token none), and a word piece overlaps each token
    that owns one of its characters (special tokens, with no characters, overlap none).
    spacy-transformers lets a token own the character after it as well (its following space), and
    a whitespace token its own: the same alignment wherever the tokenizer's offsets never cover a
    space (WordPiece: BERT, MPNet, DistilBERT, ELECTRA; RoBERTa's byte-level BPE, whose offsets
    leave out the space before a word). A SentencePiece-style tokenizer (DeBERTa-v2/v3,
    XLM-RoBERTa) includes that space in a word's first piece ("▁Paris" covers " Paris"), which
    spacy-transformers also gives to the token before the space, or to a whitespace token there.
    """
    if len(spans) != len(offset_mapping):
        raise ValueError("Cannot align batches of different sizes.")
    offsets, n_tokens = doc_offsets(spans)
    if not spans or not n_tokens:
        empty = cast(Ints1d, numpy.zeros(0, dtype="i"))
        return Ragged(empty, cast(Ints1d, numpy.zeros(n_tokens, dtype="i")))
    # (IDX, LENGTH, IS_SPACE) of every token of the batch's docs, numbered as `doc_offsets` does.
    docs = {id(span.doc): span.doc for span in spans}
    token_chars = numpy.concatenate(
        [doc.to_array([IDX, LENGTH, IS_SPACE]).reshape(-1, 3) for doc in docs.values()]
    ).astype("int64")
    # The tokens of every span, one after the other: their numbers and the characters they own
    # within their span's text (from their first character to the one after them).
    span_lengths = numpy.asarray([len(span) for span in spans], dtype="int64")
    span_firsts = numpy.asarray([offsets[id(span.doc)] + span.start for span in spans], "int64")
    span_stops = numpy.cumsum(span_lengths)  # where each span's tokens end in `token`
    span_of_token = numpy.repeat(numpy.arange(len(spans)), span_lengths)
    token = numpy.arange(len(span_of_token)) + numpy.repeat(
        span_firsts - (span_stops - span_lengths), span_lengths
    )
    starts = token_chars[token, 0] - token_chars[span_firsts, 0][span_of_token]
    ends = starts + token_chars[token, 1]
    # Each span's characters, 0 to the end of its last token, get a range of their own on one
    # axis (`base`), so that one search finds the owner of every character of the batch.
    span_ends = numpy.zeros(len(spans), dtype="int64")
    span_ends[span_lengths > 0] = ends[span_stops[span_lengths > 0] - 1]
    widths = numpy.where(span_lengths > 0, span_ends + 1, 0)
    base = numpy.cumsum(widths) - widths
    # Each word piece's characters within its span's text (and the one after it).
    wp_offsets = numpy.asarray(offset_mapping, dtype="int64").reshape(len(spans), -1, 2)
    n_pieces = wp_offsets.shape[1]
    limit = span_ends[:, None] + 1
    first = numpy.clip(wp_offsets[:, :, 0], 0, limit)
    n_chars = numpy.maximum(numpy.clip(wp_offsets[:, :, 1], 0, limit) - first, 0)
    n_chars[span_lengths == 0] = 0
    first, n_chars = first.ravel(), n_chars.ravel()
    piece = numpy.repeat(numpy.arange(len(n_chars)), n_chars)
    char = numpy.arange(len(piece)) - numpy.repeat(numpy.cumsum(n_chars) - n_chars, n_chars)
    char += numpy.repeat(first + base.repeat(n_pieces), n_chars)
    # The owner of a character: the last token starting at or before it, if it reaches it (a
    # space after a token has none).
    owner = numpy.searchsorted(starts + base[span_of_token], char, side="right") - 1
    own_ends = numpy.where(token_chars[token, 2] > 0, starts, ends)  # whitespace owns nothing
    owned = char < own_ends[owner] + base[span_of_token[owner]]
    # Sort and deduplicate (token, piece) pairs: a token seen by overlapping spans once.
    n_all = len(n_chars)
    pairs = numpy.unique(token[owner[owned]] * n_all + piece[owned])
    lengths = numpy.bincount(pairs // n_all, minlength=n_tokens)
    flat = pairs % n_all
    return Ragged(cast(Ints1d, flat.astype("i")), cast(Ints1d, lengths.astype("i")))


def doc_offsets(spans: List[Span]) -> Tuple[Dict[int, int], int]:
    """Where each doc's tokens start in a batch's alignment (by `id` of the doc), and the number
    of tokens: spacy-transformers' numbering (`align.get_token_positions`), every token of each
    doc that has spans, docs in the order of their first span, each doc once."""
    offsets: Dict[int, int] = {}
    n_tokens = 0
    for span in spans:
        if id(span.doc) not in offsets:
            offsets[id(span.doc)] = n_tokens
            n_tokens += len(span.doc)
    return offsets, n_tokens


def split_by_doc(batch: FullTransformerBatch) -> List[TransformerData]:
    """`FullTransformerBatch.split_by_doc`: the batch's output as one `TransformerData` per doc.

    spacy-transformers finds where each doc's tokens start in the batch's alignment through a dict
    from every token of the batch to its position (`align.get_token_positions`), which numbers the
    tokens of each doc that has spans, in the order of the docs' first spans. The position of a
    doc's token i is then i plus the length of the docs numbered before it, which is computed
    here instead; everything else is spacy-transformers' code.
    """
    offsets, _ = doc_offsets([span for doc_spans in batch.spans for span in doc_spans])

    # Convert all outputs to XP arrays.
    xp_model_output = ModelOutput()
    n_spans = cast(torch.Tensor, batch.model_output["last_hidden_state"]).shape[0]
    for key, output in batch.model_output.items():
        if isinstance(output, torch.Tensor):
            xp_model_output[key] = torch2xp(output)
        elif (
            isinstance(output, tuple)
            and all(isinstance(t, torch.Tensor) for t in output)
            and all(t.shape[0] == n_spans for t in output)
        ):
            xp_model_output[key] = [torch2xp(t) for t in output]

    # Split outputs per Doc.
    outputs = []
    start = 0
    prev_tokens = 0
    for doc_spans in batch.spans:
        if len(doc_spans) == 0 or len(doc_spans[0]) == 0:
            outputs.append(TransformerData.empty())
            continue
        first, last = doc_spans[0], doc_spans[-1]
        start_i = offsets[id(first.doc)] + first.start
        end_i = offsets[id(last.doc)] + last[-1].i + 1
        end = start + len(doc_spans)
        doc_tokens = batch.wordpieces[start:end]
        doc_align = batch.align[start_i:end_i]
        doc_align.data = doc_align.data - prev_tokens
        model_output = ModelOutput()
        for key, output in xp_model_output.items():
            if not isinstance(output, list):
                model_output[key] = output[start:end]
            else:
                model_output[key] = [t[start:end] for t in output]
        outputs.append(
            TransformerData(wordpieces=doc_tokens, model_output=model_output, align=doc_align)
        )
        prev_tokens += doc_tokens.input_ids.size
        start += len(doc_spans)
    return outputs
