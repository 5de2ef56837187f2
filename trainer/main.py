"""Command line: train a classifier on imbalanced data and report per-class metrics.

The `python -m trainer.main` entry point; the command, its flags and its help live in `trainer.cli`.
Run as a program, it starts and ends faster than a plain import and exit would
(`trainer.startup`; `scripts/bench_startup.py` measures both; README "Start-up time").
"""

from trainer.startup import prepare_program

if __name__ == "__main__":
    prepare_program()  # before TensorFlow is imported

from trainer.cli import app, train  # noqa: E402

if __name__ == "__main__":
    app.run_program(train.COMMAND)
