"""The transformer model: its output split by doc as spacy-transformers splits it."""

from pathlib import Path

import numpy
import spacy
from spacy_transformers.data_classes import FullTransformerBatch

from spacy_bert_ner.transformer_model import FastTransformerModel, split_by_doc

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
