"""Average the weights of pipelines trained with the same config and different seeds into one
(a "uniform model soup", Wortsman et al. 2022): one model's inference cost, the training cost of
all of them. For issue 14's ensemble lever.

    python benchmarks/soup.py OUTPUT MODEL_A MODEL_B [MODEL_C ...]

Then score OUTPUT with `python benchmarks/accuracy.py evaluate OUTPUT conll2003 --n-sents 10 ...`.
"""

from pathlib import Path
from typing import List

import spacy
import torch
import typer
from thinc.api import PyTorchShim


def main(
    output: Path = typer.Argument(..., help="Where to save the averaged pipeline"),
    models: List[Path] = typer.Argument(..., help="Trained pipelines with the same config"),
) -> None:
    """Save the pipeline whose every weight is the mean of the models' weights."""
    pipelines = [spacy.load(model) for model in models]
    first = pipelines[0]
    for nlp in pipelines[1:]:
        if nlp.pipe_names != first.pipe_names or nlp.get_pipe("bert_ner").labels != (
            first.get_pipe("bert_ner").labels
        ):
            raise typer.BadParameter(f"{models[0]} and the others differ in pipes or labels")
    for name in first.pipe_names:
        nodes = [list(nlp.get_pipe(name).model.walk()) for nlp in pipelines]
        for same in zip(*nodes):
            for param in same[0].param_names:
                if same[0].has_param(param):
                    mean = sum(node.get_param(param) for node in same) / len(same)
                    same[0].set_param(param, mean)
            for shims in zip(*(node.shims for node in same)):
                if not isinstance(shims[0], PyTorchShim):
                    continue
                states = [shim._model.state_dict() for shim in shims]
                averaged = {
                    key: (
                        torch.stack([state[key].float() for state in states]).mean(0)
                        if states[0][key].is_floating_point()
                        else states[0][key]
                    )
                    for key in states[0]
                }
                shims[0]._model.load_state_dict(averaged)
    first.to_disk(output)
    print(f"Averaged {len(models)} pipelines into {output}")


if __name__ == "__main__":
    typer.run(main)
