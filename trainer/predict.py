"""Command line: predict with an exported model on new rows (CSV, NPZ or TFRecord) and write the results.

The `python -m trainer.predict` entry point; the command, its flags and its help live in `trainer.cli`.
"""

from trainer.cli import app, predict

if __name__ == "__main__":
    app.run_program(predict.COMMAND)
