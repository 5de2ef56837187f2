"""Command line: evaluate an exported model on labelled data and write a report.

The `python -m trainer.evaluate` entry point; the command, its flags and its help live in `trainer.cli`.
"""

from trainer.cli import app, evaluate

if __name__ == "__main__":
    app.run_program(evaluate.COMMAND)
