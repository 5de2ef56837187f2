"""Command line: predict with an exported model on new rows (CSV, NPZ or TFRecord) and write the results.

The `python -m trainer.predict` entry point; the command, its flags and its help live in `trainer.cli`.
"""

from trainer.startup import prepare_program

if __name__ == "__main__":
    prepare_program()  # before TensorFlow is imported (`trainer.startup`)

from trainer.cli import app, predict  # noqa: E402

if __name__ == "__main__":
    app.run_program(predict.COMMAND)
