"""Command line: evaluate an exported model on labelled data and write a report.

The `python -m trainer.evaluate` entry point; the command, its flags and its help live in `trainer.cli`.
"""

from trainer.startup import prepare_program

if __name__ == "__main__":
    prepare_program()  # before TensorFlow is imported (`trainer.startup`)

from trainer.cli import app, evaluate  # noqa: E402

if __name__ == "__main__":
    app.run_program(evaluate.COMMAND)
