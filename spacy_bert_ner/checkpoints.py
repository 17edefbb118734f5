"""What a training run leaves in its output directory: `model-best` is never the untrained step-0
checkpoint, and the final state is scored on dev even when the run does not end on a multiple of
`eval_frequency`.

spaCy's training loop scores dev after update 0 and then after every `eval_frequency` updates, and
copies `model-last` to `model-best` whenever a score is the best so far. Two things follow that the
loop leaves to its caller: the updates after the last multiple are never scored (a run shorter than
one period keeps only the step-0 score), and the step-0 checkpoint, trained with a learning rate
still at 0 in the warmup, is `model-best` until something beats it. `spacy_bert_ner.JSONLLogger.v2`
calls the `BestCheckpoint` here at each evaluation and when training ends, so that after a
completed run `model-best` is the best *trained* checkpoint and the final state has been scored.
"""

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from spacy.language import Language
from spacy.training.loop import create_evaluation_callback
from spacy.util import registry, resolve_dot_names

BEST, LAST = "model-best", "model-last"
# Below this dev entity F1 a trained pipeline has learned next to nothing: the workflow says so.
NEAR_ZERO_F = 0.05


class BestCheckpoint:
    """Keeps `model-best` the best-scoring checkpoint after update 0, from the evaluations spaCy's
    loop makes (`on_evaluation`) and the final state (`on_end`)."""

    def __init__(self) -> None:
        self.scores: List[Tuple[int, float]] = []  # (step, score) of every evaluation
        self.output_path: Optional[Path] = None  # the training output directory

    def best_trained(self) -> Optional[Tuple[int, float]]:
        """The best evaluation after update 0 (the latest of equal scores, as spaCy's loop
        keeps), or None before there is one."""
        trained = [(score, step) for step, score in self.scores if step > 0]
        if not trained:
            return None
        score, step = max(trained)
        return step, score

    def on_evaluation(self, info: Dict[str, Any]) -> None:
        """After spaCy's loop scored dev and saved the checkpoint (`info` as the loop logs it)."""
        step, score = int(info["step"]), float(info["score"])
        self.scores.append((step, score))
        if info.get("output_path"):
            self.output_path = Path(info["output_path"]).parent
        if self.output_path is None:
            return
        best_path, last_path = self.output_path / BEST, self.output_path / LAST
        if step == 0:
            # The loop copied the untrained checkpoint to model-best: it is never the one kept.
            shutil.rmtree(best_path, ignore_errors=True)
            return
        best = self.best_trained()
        loop_kept = score == max(s for _, s in self.scores)  # the loop copied it already
        if best == (step, score) and not loop_kept and last_path.exists():
            shutil.rmtree(best_path, ignore_errors=True)
            shutil.copytree(last_path, best_path)

    def on_end(self, nlp: Language, last_step: int) -> Optional[Dict[str, Any]]:
        """When training completed: score the final state if the loop did not (returns the
        scores as `{"score", "other_scores"}`, else None) and make it `model-best` if it is the
        best trained state, or if there is no `model-best` yet."""
        evaluated = bool(self.scores) and self.scores[-1][0] == last_step
        result = None
        if not evaluated:
            score, other_scores = evaluate_dev(nlp)
            self.scores.append((last_step, score))
            result = {"score": score, "other_scores": other_scores}
        if self.output_path is not None:
            best_path = self.output_path / BEST
            if self.best_trained() == (last_step, self.scores[-1][1]) and not evaluated:
                shutil.rmtree(best_path, ignore_errors=True)
            if not best_path.exists():
                nlp.to_disk(best_path)
        return result


def evaluate_dev(nlp: Language) -> Tuple[float, Dict[str, Any]]:
    """Score `nlp` on the training config's dev corpus with its score weights, as spaCy's
    training loop does (its own evaluation callback)."""
    config = nlp.config.interpolate()
    training = config["training"]
    (dev_corpus,) = resolve_dot_names(config, [training["dev_corpus"]])
    weights = registry.resolve({"weights": training["score_weights"]})["weights"]
    return create_evaluation_callback(nlp, dev_corpus, weights)()
