"""Flags of training: epochs, batches, the optimiser (and weight decay), seeds, NaN steps, XLA.

Each flag is a field of `trainer.cli.config.TrainingConfig`.
"""

from absl import flags

TITLE = "Training"

flags.DEFINE_integer("epochs", 10,
                     "Total number of epochs (a resumed run trains the remaining ones; a larger "
                     "value continues a finished run).")
flags.DEFINE_integer("batch_size", None,
                     "Global batch size (split across replicas). Default: from the training rows n, "
                     "the power of two at or below n/64 within [64, 256] (64 below 8,192 rows, 256 "
                     "from 16,384), so a small table still gets about 64 steps per epoch (chosen "
                     "on validation rows of scripts/bench_tabular.py's data sets; README).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("weight_decay", 0.0,
                   "Decoupled weight decay (AdamW; Loshchilov & Hutter 2019) of the kernels, biases "
                   "excluded; 0 is plain Adam. Unlike an L2 term in the loss, its pull does not grow "
                   "or shrink with the class weights a reweighting rule puts on the loss.")
flags.DEFINE_integer("steps_per_loop", 100, "Training steps per compiled call.")
flags.DEFINE_integer("seed", 0, "Seed of data shuffling and weight initialisation.")
flags.DEFINE_bool("deterministic", False,
                  "Seed everything with --seed and turn on TensorFlow's op determinism: the same "
                  "command gives the same weights, and a run resumed after a crash finishes like "
                  "an uninterrupted one.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "Compile the training step with XLA: 'true', 'false', or 'auto': before the first "
                  "step, time a few steps both ways on the first batch (the model is put back as it "
                  "was), keep the faster, log the figures and remember the choice in "
                  "<model_dir>/checkpoints/jit_compile.json, so a resume does not measure again. "
                  "Under MirroredStrategy on CPUs only the model's forward and backward pass are "
                  "compiled. Dropout draws other (equally distributed) random masks under XLA. "
                  "With --deterministic, 'auto' is 'false' (no timing decides a repeatable run).")
flags.DEFINE_bool("skip_nonfinite_steps", False,
                  "Skip (and count) steps whose loss or gradients are NaN or Inf instead of "
                  "stopping with an error (exit status 3).")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy of the built-in model: 'float32', or 'mixed_float16' / "
                  "'mixed_bfloat16' (layers compute in 16 bits, variables, the input normalisation and "
                  "the logits stay float32). float16 adds dynamic loss scaling (a step whose gradients "
                  "overflow is skipped and the scale halved; not a non-finite error). The export serves "
                  "float32 inputs and outputs either way.")
