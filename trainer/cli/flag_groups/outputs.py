"""Flags of the outputs: the run directory, the export, what a resume may change, how much is logged.

Each flag is a field of `trainer.cli.config.OutputConfig`.
"""

from absl import flags, logging  # noqa: F401  (logging defines --verbosity, a key flag below)

TITLE = "Outputs"

flags.DEFINE_string("model_dir", "./runs/default",
                    "Run directory: checkpoints, TensorBoard events, metrics.json. A run started "
                    "again on the same directory resumes, if its configuration and data are the "
                    "same (see --allow_config_change).")
flags.DEFINE_string("export_dir", None,
                    "Where the SavedModel goes (default <model_dir>/export); 'none' skips the export.")
flags.DEFINE_list("allow_config_change", None,
                  "Comma-separated names (flags such as learning_rate, or data facts such as "
                  "class_counts) a resumed run may change: without them a resume whose "
                  "configuration or data differ from the checkpoint's run stops before training.")
flags.DEFINE_bool("compare_baseline", None,
                  "Also train plain cross-entropy (same data, model, epochs and seed, under "
                  "<model_dir>/baseline) and end with a comparison of worst-class recall and "
                  "balanced accuracy. Default: on for the built-in synthetic data, off otherwise.")
flags.DEFINE_integer("confusion_matrix_every", 0,
                     "TensorBoard: draw the confusion-matrix image of the per-epoch evaluation after "
                     "every this many epochs, and after the last one (0: only after the last one). "
                     "With matplotlib each image costs about 0.3 s for 10 classes and 1-2 s for 30 "
                     "(past 30 classes only the 30 of lowest recall are drawn).")
flags.declare_key_flag("verbosity")
