"""BERT token-classification NER as a trainable spaCy pipeline component (`bert_ner`)."""

# Before the imports: the packaging and the model card read it.
__version__ = "0.1.0"

from . import (  # noqa: F401 (registers them)
    architectures,
    augmenters,
    legacy,
    loggers,
    optimizers,
    schedules,
    scorer,
)
from .inference import load, quantize
from .pipeline_component import BertNER, make_bert_ner

__all__ = ["BertNER", "make_bert_ner", "load", "quantize", "__version__"]
