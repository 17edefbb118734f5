"""BERT token-classification NER as a trainable spaCy pipeline component (`bert_ner`)."""

from . import architectures, augmenters, loggers, optimizers, schedules, scorer  # noqa: F401 (registers them)
from .inference import load, quantize
from .pipeline_component import BertNER, make_bert_ner

__version__ = "0.1.0"
__all__ = ["BertNER", "make_bert_ner", "load", "quantize", "__version__"]
