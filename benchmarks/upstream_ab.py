"""Run a benchmark script with parts of the package switched back to the code they replace, for
A/B timings in one session on one machine:

    python benchmarks/upstream_ab.py benchmarks/training_speed.py --thinc-adam [ARGS...]
    python benchmarks/upstream_ab.py benchmarks/training_speed.py --upstream-pooling [ARGS...]
    python benchmarks/upstream_ab.py benchmarks/training_speed.py --upstream-forward [ARGS...]

--thinc-adam: thinc's per-parameter Adam instead of `optimizers.update_all`;
--upstream-pooling: spacy-transformers' doc-by-doc `trfs2arrays` instead of `listener.trfs2arrays`;
--upstream-forward: spacy-transformers' forward pass of the transformer model (its alignment and
split by doc, one encoder call per batch) instead of `transformer_model.forward`.
Only for benchmarks that build their pipelines in this process (not inference_speed.py, whose
systems run in child processes).
"""

import runpy
import sys

args = sys.argv[1:]
if "--thinc-adam" in args:
    args.remove("--thinc-adam")
    from spacy_bert_ner import optimizers

    optimizers.HeadScaledAdam.can_update_all = property(lambda self: False)  # type: ignore
if "--upstream-pooling" in args:
    args.remove("--upstream-pooling")
    import spacy_transformers.layers

    from spacy_bert_ner import architectures

    architectures.trfs2arrays = spacy_transformers.layers.trfs2arrays  # type: ignore
if "--upstream-forward" in args:
    args.remove("--upstream-forward")
    from spacy_transformers.layers import transformer_model as upstream

    from spacy_bert_ner import transformer_model

    transformer_model.forward = upstream.forward  # type: ignore
sys.argv = args
runpy.run_path(args[0], run_name="__main__")
