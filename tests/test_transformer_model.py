"""The transformer model: its output split by doc as spacy-transformers splits it."""

from pathlib import Path

import numpy
import pytest
import spacy
from spacy_transformers.data_classes import FullTransformerBatch

from spacy_bert_ner.transformer_model import FastTransformerModel, split_by_doc
from spacy_bert_ner.window_batches import window_batches

TEXT = "john smith works for acme corp in paris ."


def test_split_by_doc_equals_spacy_transformers(pipeline_path: Path) -> None:
    """The same per-doc word pieces, alignment and hidden states as spacy-transformers'
    `FullTransformerBatch.split_by_doc`, for a batch with an empty doc, whitespace and control
    characters, a long doc (several overlapping windows) and the same doc twice; and the model's
    output arrives split (its `doc_data` is ours), in training and in prediction."""
    nlp = spacy.load(pipeline_path)
    model = nlp.get_pipe("transformer").model
    assert isinstance(model, FastTransformerModel)
    texts = [TEXT, "", "acme  corp \n paris", "john \x07 smith", " ".join([TEXT] * 40), "paris"]
    docs = [nlp.make_doc(text) for text in texts]
    docs.append(docs[0])
    for is_train in (True, False):
        batch, _ = model._func(model, docs, is_train)
        assert batch.cached_doc_data is not None
        ours = batch.cached_doc_data
        theirs = FullTransformerBatch(
            spans=batch.spans,
            wordpieces=batch.wordpieces,
            model_output=batch.model_output,
            align=batch.align,
        ).split_by_doc()
        assert len(ours) == len(theirs) == len(docs)
        assert len(ours[4].wordpieces.input_ids) > 1  # several windows
        assert not ours[1].model_output  # the empty doc
        for a, b in zip(ours, theirs):
            numpy.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
            numpy.testing.assert_array_equal(a.align.lengths, b.align.lengths)
            numpy.testing.assert_array_equal(a.wordpieces.input_ids, b.wordpieces.input_ids)
            assert a.model_output.keys() == b.model_output.keys()
            for key in a.model_output:
                numpy.testing.assert_array_equal(a.model_output[key], b.model_output[key])
        assert split_by_doc(batch)[6].align.dataXd.tolist() == ours[6].align.dataXd.tolist()
    # The whole component: each doc's trf_data as the per-doc split gives it.
    annotated = list(nlp.pipe(texts))
    assert annotated[4]._.trf_data.align.lengths.tolist() == ours[4].align.lengths.tolist()


def test_align_word_pieces_equals_spacy_transformers(tiny_bert: str) -> None:
    """The same alignment as spacy-transformers' `get_alignment_via_offset_mapping` for
    overlapping windows, the same doc twice, an empty doc, whitespace and control-character
    tokens (no word piece), tokens without a space between them, words split into several
    pieces, accents and emoji, a doc made from words, and random texts."""
    import random

    from spacy.tokens import Doc
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.span_getters import get_strided_spans
    from transformers import AutoTokenizer

    from spacy_bert_ner.transformer_model import align_word_pieces

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, use_fast=True)
    nlp = spacy.blank("en")
    texts = [
        TEXT,
        "acme  corp \n paris \t\t x",
        "john \x07 smith\x00",
        "(U.S.-based)anti-disestablishmentarianism!!",
        "Zürich, São Paulo 😀 naïve café",
        " ".join([TEXT] * 30),
    ]
    rng = random.Random(0)
    alphabet = ["a", "bc", "Déf", "!", "-", " ", "  ", "\n", "😀", "xyzzyplugh", "0.5"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(30)]
    docs = [nlp.make_doc(text) for text in texts]
    docs.append(Doc(nlp.vocab, words=["paris", " ", "x", "y"], spaces=[False, True, False, False]))
    docs.append(docs[0])
    docs.insert(3, nlp.make_doc(""))  # no spans

    def both_alignments(spans):
        encoding = tokenizer(
            [span.text for span in spans],
            return_offsets_mapping=True,
            return_tensors="np",
            padding="longest",
        )
        offsets = encoding["offset_mapping"]
        return align_word_pieces(spans, offsets), get_alignment_via_offset_mapping(spans, offsets)

    # All docs in one batch, and one doc at a time.
    batches = [get_strided_spans(docs, 16, 12)]
    batches += [get_strided_spans([d], 16, 12) for d in docs[:8] if len(d)]
    for nested in batches:
        ours, theirs = both_alignments([span for doc_spans in nested for span in doc_spans])
        assert ours.lengths.tolist() == theirs.lengths.tolist()
        assert ours.dataXd.tolist() == theirs.dataXd.tolist()
    assert sum(len(doc_spans) for doc_spans in batches[0]) > len(docs)  # overlapping windows
    ours, _ = both_alignments([span for doc_spans in batches[0] for span in doc_spans])
    assert (ours.lengths == 0).any() and (ours.lengths > 2).any()
    with pytest.raises(ValueError, match="different sizes"):
        align_word_pieces(list(batches[0][0]) * 2, numpy.zeros((1, 4, 2), dtype="int64"))


def test_tokenize_equals_spacy_transformers(tiny_bert: str) -> None:
    """The same encoding as spacy-transformers' `huggingface_tokenize` (word-piece strings
    included, which are read from the fast tokenizer's encodings instead of converted from ids),
    for padding, unknown characters, special tokens written in the text, accents and emoji; a slow
    tokenizer goes through spacy-transformers' function."""
    from spacy_transformers.layers.transformer_model import huggingface_tokenize
    from transformers import AutoTokenizer

    from spacy_bert_ner.transformer_model import tokenize

    texts = [TEXT, "a", "[PAD] and [SEP] [UNK] in text", "Zürich 😀 naïve \u2fff x\u0301", ""]
    for use_fast in (True, False):
        tokenizer = AutoTokenizer.from_pretrained(tiny_bert, use_fast=use_fast)
        ours, theirs = tokenize(tokenizer, texts), huggingface_tokenize(tokenizer, texts)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            if isinstance(theirs[key], numpy.ndarray):
                numpy.testing.assert_array_equal(ours[key], theirs[key])
            else:
                assert ours[key] == theirs[key], key
        assert "[PAD]" in ours["input_texts"][1]  # padded


@pytest.mark.parametrize("left_padded", [False, True])
def test_window_batches_group_windows_of_similar_length(left_padded: bool, monkeypatch) -> None:
    """Window batches hold windows of similar length, longest first, each batch at most
    WINDOW_BATCH_PIECES word pieces once padded to its longest window (rounded up to a multiple of
    LENGTH_STEP); windows padded on the left keep the full width."""
    from spacy_transformers.data_classes import WordpieceBatch

    from spacy_bert_ner import window_batches as batching

    monkeypatch.setattr(batching, "WINDOW_BATCH_PIECES", 64)
    monkeypatch.setattr(batching, "LENGTH_STEP", 4)
    lengths = [3, 40, 17, 16, 1, 70, 15]
    width = max(lengths)
    mask = numpy.arange(width) < numpy.asarray(lengths)[:, None]
    if left_padded:
        mask = mask[:, ::-1]
    wordpieces = WordpieceBatch(
        strings=[["x"] * width] * len(lengths),
        input_ids=numpy.zeros((len(lengths), width), dtype="i"),
        attention_mask=mask.astype("f"),
        lengths=lengths,
        token_type_ids=None,
    )
    batches = [(windows.tolist(), length) for windows, length in window_batches(wordpieces)]
    if left_padded:
        assert batches == [([i], width) for i in range(len(lengths))]
    else:
        assert batches == [([5], 70), ([1], 40), ([2, 3, 6], 20), ([0, 4], 4)]


def test_window_batches_keep_every_output_of_the_encoder(monkeypatch) -> None:
    """Encoded a window batch at a time, an encoder's outputs come back whole, at every word
    piece of every window: the last hidden state, the pooled output, a tuple of hidden states
    (`output_hidden_states`) and attention scores over two piece dimensions (an encoder here that
    computes them from the ids alone)."""
    import torch
    from spacy_transformers.data_classes import WordpieceBatch
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    from spacy_bert_ner import window_batches as batching

    def encoder(wordpieces, is_train):
        ids = torch.as_tensor(wordpieces.input_ids).float()
        hidden = ids[..., None] * torch.arange(1, 4).float()
        scores = (ids[:, None, :, None] + ids[:, None, None, :]).expand(-1, 2, -1, -1)
        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden,
            pooler_output=hidden[:, 0],
            hidden_states=(hidden, 2 * hidden),
            attentions=(scores,),
        )
        return output, None

    rng = numpy.random.default_rng(0)
    lengths = rng.integers(1, 60, 40)
    pieces = numpy.arange(lengths.max()) < lengths[:, None]
    wordpieces = WordpieceBatch(
        strings=[["x"] * pieces.shape[1]] * len(lengths),
        input_ids=numpy.where(pieces, rng.integers(1, 100, pieces.shape), 0).astype("i"),
        attention_mask=pieces.astype("f"),
        lengths=lengths.tolist(),
        token_type_ids=None,
    )
    expected, _ = encoder(wordpieces, False)
    monkeypatch.setattr(batching, "WINDOW_BATCH_PIECES", 128)
    batches = batching.window_batches(wordpieces)
    assert len(batches) > 10 and len({length for _, length in batches}) > 1
    output, _ = batching.encode(encoder, wordpieces, False)
    assert type(output) is type(expected) and output.keys() == expected.keys()
    mask = torch.as_tensor(pieces)
    both = mask[:, None, :, None] & mask[:, None, None, :]
    assert torch.equal(output.pooler_output, expected.pooler_output)
    assert isinstance(output.hidden_states, tuple) and len(output.hidden_states) == 2
    for ours, theirs in zip(
        (output.last_hidden_state, *output.hidden_states),
        (expected.last_hidden_state, *expected.hidden_states),
    ):
        assert ours.shape == theirs.shape and torch.equal(ours[mask], theirs[mask])
    ours, theirs = output.attentions[0], expected.attentions[0]
    assert ours.shape == theirs.shape
    assert torch.equal(ours[both.expand_as(ours)], theirs[both.expand_as(theirs)])


def test_long_document_is_encoded_in_window_batches(pipeline_path: Path, monkeypatch) -> None:
    """A document of many windows reaches the encoder a window batch at a time (all windows in
    one pass held every window's attention scores at once: 5-7 GB for a 1M-character document),
    windows of similar length together, each batch padded to its own longest window, not the
    document's: the hidden states of one pass over all windows at every word piece, the same
    alignment and entities."""
    import sys

    from spacy_bert_ner import window_batches as batching

    nlp = spacy.load(pipeline_path)
    encoder = nlp.get_pipe("transformer").model.transformer
    passes = []
    encoder.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    # 1,550 tokens: 16 windows of 128 tokens, stride 96, of about 130 word pieces in the first
    # half and 230 in the second (the tiny BERT spells "qwertyuiop" in 10)
    text = " ".join([TEXT] * 75 + [TEXT + " qwertyuiop"] * 75)
    monkeypatch.setattr(batching, "WINDOW_BATCH_PIECES", sys.maxsize)
    one_pass = nlp(text)
    assert len(passes) == 1 and passes[0][0] > 10
    windows, width = passes[0]
    passes.clear()
    monkeypatch.setattr(batching, "WINDOW_BATCH_PIECES", 4 * width)
    batched = nlp(text)
    assert sum(n for n, _ in passes) == windows and len(passes) >= windows / 4
    assert all(n * w <= 4 * width for n, w in passes)
    assert max(w for _, w in passes) == width and min(w for _, w in passes) < width - 20
    assert [(e.start, e.end, e.label_) for e in batched.ents] == [
        (e.start, e.end, e.label_) for e in one_pass.ents
    ]
    assert len(batched.ents) > 100
    ours, theirs = batched._.trf_data, one_pass._.trf_data
    assert ours.align.dataXd.tolist() == theirs.align.dataXd.tolist()
    assert ours.model_output.keys() == theirs.model_output.keys()
    pieces = theirs.wordpieces.attention_mask > 0
    assert not pieces.all()
    for key in theirs.model_output:
        a, b = ours.model_output[key], theirs.model_output[key]
        assert a.shape == b.shape
        if a.ndim == 3:  # (windows, word pieces, width): padding is never read
            a, b = a[pieces], b[pieces]
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # The default batches a long document too; a short one is one pass, as before.
    monkeypatch.undo()
    passes.clear()
    nlp(" ".join([TEXT] * 2000))
    assert len(passes) > 1 and max(n * w for n, w in passes) <= batching.WINDOW_BATCH_PIECES
    passes.clear()
    nlp(TEXT)
    assert len(passes) == 1
