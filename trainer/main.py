"""Command line: train a classifier on imbalanced data and report per-class metrics.

The `python -m trainer.main` entry point; the command, its flags and its help live in `trainer.cli`.
"""

from trainer.cli import app, train

if __name__ == "__main__":
    app.run_program(train.COMMAND)
