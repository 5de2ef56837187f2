"""The command line: flags grouped by topic, a frozen config with every cross-flag check, the commands.

`python -m trainer.main` and `python -m trainer.evaluate` are thin entry points into `trainer.cli.app`.
"""
