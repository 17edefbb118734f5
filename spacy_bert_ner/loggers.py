"""A training logger that keeps the training curve as JSON lines, beside spaCy's console table.

spaCy's `spacy.ConsoleLogger.v3` can write JSONL too, but it keeps neither the elapsed time nor the
words seen, and it refuses to overwrite a log from an earlier run (so a retrained model would keep
the old curve). This one writes, to a file it replaces:

- a first line `{"command": ..., "config_overrides": ..., "started": ...}`: how training was run;
- one line per evaluation: `epoch`, `step`, `seconds`, `words`, `words_per_second`, `losses` (summed
  since the previous evaluation), `score` and `scores` (every dev score the scorers returned, as
  spaCy returns them: fractions, `ents_per_type` nested);
- a last line `{"finished": ..., "seconds": ...}` when training ends.

Chain it with the console logger (`spacy.ChainLogger.v1`) to keep the table on the console.

`spacy_bert_ner.JSONLLogger.v2` (the project's) also keeps `model-best` a trained checkpoint and
scores the final state when the loop did not (`checkpoints.py`): that evaluation is logged like the
others, with `"final": true` and no losses. Its last line adds what the run was: `updates`,
`epochs` (fractional when `max_steps` stopped it inside an epoch), `stopped_by`
(`max_epochs`, `max_steps` or `patience`), `evaluations` and `best_step`.
"""

import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.util import registry, resolve_dot_names
from wasabi import Printer

from .checkpoints import NEAR_ZERO_F, BestCheckpoint
from .schedules import batches_per_epoch, training_steps

# What the last line of a completed JSONLLogger.v2 run says of the run.
RUN_KEYS = ("updates", "epochs", "stopped_by", "best_step")
LogStep = Callable[[Optional[Dict[str, Any]]], None]
Logger = Callable[[Language, IO, IO], Tuple[LogStep, Callable[[], None]]]


def command_line(argv: Optional[List[str]] = None) -> str:
    """The command this process runs, as it could be typed again: `python -m spacy train ...` when
    run through spaCy's CLI, after the config overrides spaCy reads from the environment."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "__main__.py":  # `python -m package`
        argv = ["python", "-m", Path(argv[0]).parent.name, *argv[1:]]
    command = shlex.join(argv)
    overrides = os.environ.get("SPACY_CONFIG_OVERRIDES")
    if overrides:
        command = f"SPACY_CONFIG_OVERRIDES={shlex.quote(overrides)} {command}"
    return command


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JSONLog:
    """A JSONL file replaced when training starts, its first line saying how training was run."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = path.open("w", encoding="utf8")
        self.start = time.perf_counter()
        self.write(
            {
                "command": command_line(),
                "config_overrides": os.environ.get("SPACY_CONFIG_OVERRIDES"),
                "started": _now(),
            }
        )

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def write(self, record: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def evaluation(self, info: Dict[str, Any], **extra: Any) -> None:
        """One evaluation, from the `info` spaCy's loop logs (words None: not counted)."""
        seconds, words = self.seconds, info["words"]
        self.write(
            {
                "epoch": info["epoch"],
                "step": info["step"],
                "seconds": round(seconds, 2),
                "words": words,
                "words_per_second": round(words / seconds, 1) if seconds and words else None,
                "losses": {name: float(loss) for name, loss in info["losses"].items()},
                "score": float(info["score"]),
                "scores": info["other_scores"],
                **extra,
            }
        )

    def finish(self, **summary: Any) -> None:
        if not self.stream.closed:
            self.write({"finished": _now(), "seconds": round(self.seconds, 2), **summary})
            self.stream.close()


@registry.loggers("spacy_bert_ner.JSONLLogger.v2")
def make_jsonl_logger_v2(path: Union[str, Path]) -> Logger:
    """The training curve as JSON lines (as v1), and a run that ends well: `model-best` is never
    the untrained step-0 checkpoint, the final state is scored on dev when the loop did not score
    it (and becomes `model-best` if it is the best), and the last line says how long the run was.

    path (Union[str, Path]): the JSONL file to write; replaced when training starts.
    """

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> Tuple[LogStep, Callable[[], None]]:
        log = JSONLog(Path(path))
        best = BestCheckpoint()
        steps = 0  # spaCy's loop calls log_step once per update

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            nonlocal steps
            steps += 1
            if info is not None:
                log.evaluation(info)
                best.on_evaluation(info)

        def finalize() -> None:
            if sys.exc_info()[0] is not None or not steps:  # training failed or was stopped
                log.finish()
                return
            printer = Printer(no_print=True)  # returns the text, for stdout or stderr
            plan = _run_plan(nlp, steps)
            averaged = bool(nlp.config["training"]["optimizer"].get("use_averages"))
            final = None if averaged else best.on_end(nlp, steps - 1)
            if final is not None:
                # The loop's words and losses since the last evaluation are not logged to us.
                final_info = {"epoch": plan["last_epoch"], "step": steps - 1, "words": None}
                log.evaluation({**final_info, **final, "losses": {}}, final=True)
                stdout.write(
                    printer.info(
                        f"Scored the final state (update {steps}, after the last evaluation): "
                        f"{100 * final['score']:.2f}"
                    )
                    + "\n"
                )
            elif averaged:
                stdout.write(
                    printer.warn(
                        "The final state was not scored: with use_averages the loop saves "
                        "averaged weights this logger cannot see."
                    )
                    + "\n"
                )
            best_step, best_score = best.best_trained() or (0, 0.0)
            log.finish(
                updates=steps,
                epochs=plan["epochs"],
                stopped_by=plan["stopped_by"],
                best_step=best_step,
            )
            if best_score < NEAR_ZERO_F:
                stderr.write(
                    printer.fail(
                        f"The best dev score is {100 * best_score:.2f}: this pipeline has learned "
                        "next to nothing. Check the training data (labels, enough examples), "
                        "the run length and the learning rate before using it."
                    )
                    + "\n"
                )

        return log_step, finalize

    return setup


def _run_plan(nlp: Language, steps: int) -> Dict[str, Any]:
    """How a completed run of `steps` updates ended: `epochs` (a fraction when it stopped inside an
    epoch), the index of its `last_epoch`, and what `stopped_by` it."""
    config = nlp.config.interpolate()
    training = config["training"]
    resolved = registry.resolve(
        {"epochs": training["max_epochs"], "steps": training["max_steps"], "b": training["batcher"]}
    )
    max_epochs, max_steps = int(resolved["epochs"]), int(resolved["steps"])
    (train_corpus,) = resolve_dot_names(config, [training["train_corpus"]])
    n_batches = batches_per_epoch(train_corpus, resolved["b"], str(config["nlp"]["lang"]))
    if max_steps > 0 and steps == max_steps + 1:
        stopped_by = "max_steps"
    elif training.get("patience") and steps < training_steps(n_batches, max_epochs, max_steps):
        stopped_by = "patience"
    else:
        stopped_by = "max_epochs"
    epochs = max_epochs if stopped_by == "max_epochs" else round(steps / n_batches, 2)
    last_epoch = (steps - 1) // n_batches
    if max_epochs > 0:
        last_epoch = min(last_epoch, max_epochs - 1)
    return {"epochs": epochs, "stopped_by": stopped_by, "last_epoch": last_epoch}


def read_log(path: Union[str, Path]) -> Dict[str, Any]:
    """A JSONL training log as {"command", "started", "finished", "seconds", "evaluations", and the
    RUN_KEYS}: "evaluations" are the per-evaluation records in order; "seconds" is the whole run's
    time (from the last line, else the last evaluation), None when the log has no timing; the
    RUN_KEYS are None in a log of v1 or of a run that did not complete."""
    path = Path(path)
    log: Dict[str, Any] = {"command": None, "started": None, "finished": None, "seconds": None}
    log.update(dict.fromkeys(RUN_KEYS))
    evaluations = []
    with path.open(encoding="utf8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err}).") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: not a JSON object.")
            if "step" in record:
                missing = {"epoch", "losses", "scores"} - set(record)
                if missing:
                    raise ValueError(
                        f"{path}:{number}: an evaluation without {', '.join(sorted(missing))} "
                        "(is this a log of spacy_bert_ner.JSONLLogger.v1?)."
                    )
                evaluations.append(record)
                log["seconds"] = record.get("seconds", log["seconds"])
            else:
                log.update({k: v for k, v in record.items() if k in log})
    log["evaluations"] = evaluations
    return log
