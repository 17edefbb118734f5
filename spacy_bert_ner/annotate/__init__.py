"""`python -m spacy_bert_ner annotate`: a spaCy pipeline over a text or JSONL collection, streamed,
resumable, nothing lost silently (the guarantees: docs/annotate.md). One module per concern:

- `options`: the run's settings (`AnnotateOptions`), its stats, and the errors it reports;
- `reading`: input records, from a file or a stream, with each bad one named by file:line;
- `outputs`: output records (the input's fields and the entities) as strict JSON;
- `claim`: one writer per output (`OutputLock`), never the input as output;
- `writers`: the resumable JSONL and the Parquet writers, and the ordered flow into them;
- `local`: the local engine (`nlp.pipe`, optionally in worker processes);
- `ray_engine`: the Ray engine (Ray Data and an actor pool; Ray is imported only when it runs).

Pipelines are loaded by `spacy_bert_ner.inference.load_pipeline` (shared with `analyze`).
"""

from .local import annotate, annotate_model
from .options import AnnotateError, AnnotateOptions, AnnotateStats, RecordError, TruncatedInputError
from .ray_engine import annotate_on_ray

__all__ = [
    "AnnotateError",
    "AnnotateOptions",
    "AnnotateStats",
    "RecordError",
    "TruncatedInputError",
    "annotate",
    "annotate_model",
    "annotate_on_ray",
]
