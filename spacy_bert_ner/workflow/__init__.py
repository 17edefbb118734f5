"""What the project workflow writes after training, from the files of the steps before: the
training report (`report.py`, its figures in `figures.py`), the package's model card
(`model_card.py`) and the installable packages (`packaging.py`); `files.py` reads what an earlier
step wrote, the same way for all of them."""
