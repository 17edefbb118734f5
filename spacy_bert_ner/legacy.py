"""Superseded registered functions, kept so that configs and trained pipelines that name them still
load (as spacy-legacy keeps spaCy's): each builds exactly the model it built when it was current.
New configs use the versions in `architectures`."""

import sys
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, zero_init
from thinc.types import Floats2d

from .architectures import build_token_classifier_v3, token_classifier
from .loggers import JSONLog, Logger, LogStep


@registry.architectures("spacy_bert_ner.TokenClassifier.v1")
def build_token_classifier_v1(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 0,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token tag probabilities: tok2vec -> dropout -> optional ReLU layer -> softmax, the
    output layer initialised with zeros, no slot for extra token features. Superseded by v2 (now
    `TokenClassifier.v3`): the zero-initialised output layer starves the encoder of gradient at
    the start of fine-tuning.

    tok2vec (Model[List[Doc], List[Floats2d]]): One vector per spaCy token.
    hidden_width (int): Width of a hidden ReLU layer before the softmax; 0 for none.
    nO (Optional[int]): Number of tags; inferred from the labels at initialization when None.
    """
    return token_classifier(tok2vec, hidden_width, nO, init_W=zero_init)


@registry.architectures("spacy_bert_ner.TokenClassifier.v2")
def build_token_classifier_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
    hidden_width: int = 0,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """`TokenClassifier.v3` without its CRF settings (v3 with `crf = false` is this model, with
    the same layers, weights and outputs).

    tok2vec, features, hidden_width, nO: As in `TokenClassifier.v3`.
    """
    return build_token_classifier_v3(tok2vec, features, hidden_width, crf=False, nO=nO)


@registry.loggers("spacy_bert_ner.JSONLLogger.v1")
def make_jsonl_logger(path: Union[str, Path]) -> Logger:
    """The training curve as JSON lines (`loggers.py`). Superseded by v2, which also scores the
    final state and keeps `model-best` a trained checkpoint.

    path (Union[str, Path]): the JSONL file to write; replaced when training starts.
    """

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> Tuple[LogStep, Callable[[], None]]:
        log = JSONLog(Path(path))

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            if info is not None:  # None: a step without an evaluation
                log.evaluation(info)

        return log_step, log.finish

    return setup
