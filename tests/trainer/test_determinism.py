"""`seed_everything`: one seed gives the same draws from Python, NumPy, TensorFlow and Keras.

The draws after seeding are compared with those after seeding again; a bad seed names `seed`.
"""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.determinism import MAX_SEED, seed_everything


def _draws():
    return (random.random(), np.random.random(), float(tf.random.uniform([])),
            keras.initializers.GlorotUniform()((3, 2)).numpy().tolist())


def test_the_same_seed_gives_the_same_draws_everywhere():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    other = _draws()
    assert all(a != b for a, b in zip(other, first))


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, "3", True, None])
def test_a_bad_seed_is_named(seed):
    with pytest.raises(ArgumentError, match=rf"^seed must be an integer in \[0, {MAX_SEED}\], "
                                            rf"got {seed!r}\.$") as caught:
        seed_everything(seed)
    assert caught.value.argument == "seed"
