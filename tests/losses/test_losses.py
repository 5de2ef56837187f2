"""Oracle tests of the per-example losses: against Keras, the papers' formulas and numpy.

Small tensors only; every loss is also checked at logits of +-1e4 and with Keras's label shapes.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import (
    BalancedSoftmaxCrossentropy,
    LDAMCrossentropy,
    LogitAdjustedCrossentropy,
    SigmoidFocalCrossentropy,
    SparseFocalCrossentropy,
    WeightedRecallCrossentropy,
)
from trainer.checks import ArgumentError

COUNTS = [500.0, 120.0, 30.0, 7.0]
NUM_CLASSES = len(COUNTS)


def _data(batch=16, num_classes=NUM_CLASSES, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((batch, num_classes))).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
    labels[:num_classes] = np.arange(num_classes)  # every class present
    return labels, logits


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _np_cross_entropy(labels, logits):
    return -_np_log_softmax(logits)[np.arange(len(labels)), labels]


def _per_example(loss):
    """A copy of `loss` with reduction None (per-example values)."""
    config = loss.get_config()
    config["reduction"] = None
    return type(loss).from_config(config)


ALL_SPARSE_LOSSES = [
    lambda: SparseFocalCrossentropy(gamma=2.0),
    lambda: SparseFocalCrossentropy(gamma=0.5, alpha=[0.1, 0.2, 0.3, 0.4]),
    lambda: SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25),
    lambda: LogitAdjustedCrossentropy(COUNTS, tau=1.0),
    lambda: BalancedSoftmaxCrossentropy(COUNTS),
    lambda: LDAMCrossentropy(COUNTS, max_margin=0.5, scale=30.0),
    lambda: WeightedRecallCrossentropy(target_class=3, recall_weight=5.0),
]
LOSS_IDS = ["focal", "focal_alpha", "sigmoid_focal", "logit_adjusted", "balanced_softmax",
            "ldam", "weighted_recall"]


# --- focal -----------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_sparse_focal_matches_keras_categorical_focal(gamma):
    labels, logits = _data(batch=32, scale=3.0)
    one_hot = tf.one_hot(labels, NUM_CLASSES, dtype=tf.float64)
    # In float64 both are exact to far below 1e-6; in float32 each rounds differently
    # (Keras takes log(softmax), we take log-softmax), up to ~2e-6 relative at gamma=5.
    for dtype, rtol in (("float64", 1e-6), ("float32", 1e-5)):
        ours = SparseFocalCrossentropy(gamma=gamma, reduction=None, dtype=dtype)(labels, logits)
        keras_loss = keras.losses.CategoricalFocalCrossentropy(
            alpha=1.0, gamma=gamma, from_logits=True, reduction=None, dtype=dtype)
        reference = keras_loss(one_hot, logits)
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=rtol, atol=1e-6)


def test_sparse_focal_matches_paper_formula_and_alpha():
    labels, logits = _data(batch=16)
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    p = np.exp(_np_log_softmax(logits))[np.arange(16), labels]
    expected = -alpha[labels] * (1.0 - p) ** 2.0 * np.log(p)
    ours = SparseFocalCrossentropy(gamma=2.0, alpha=alpha, reduction=None)(labels, logits)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-7)
    plain = SparseFocalCrossentropy(gamma=0.0, reduction=None)(labels, logits)
    np.testing.assert_allclose(plain.numpy(), _np_cross_entropy(labels, logits), rtol=1e-5)


def _sigmoid_focal_numpy(targets, logits, gamma, alpha):
    z = np.asarray(logits, np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    p_t = np.where(targets == 1, p, 1.0 - p)
    weight = 1.0 if alpha is None else np.where(targets == 1, alpha, 1.0 - alpha)
    return (-weight * (1.0 - p_t) ** gamma * np.log(p_t)).sum(axis=-1)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_matches_formula_and_keras(alpha):
    rng = np.random.default_rng(1)
    logits = (3.0 * rng.standard_normal((12, 3))).astype(np.float32)
    multi_hot = (rng.random((12, 3)) < 0.4).astype(np.float32)
    loss = SigmoidFocalCrossentropy(gamma=2.0, alpha=alpha, reduction=None)
    ours = loss(multi_hot, logits).numpy()
    np.testing.assert_allclose(ours, _sigmoid_focal_numpy(multi_hot, logits, 2.0, alpha),
                               rtol=1e-5, atol=1e-6)
    keras_loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=alpha is not None, alpha=alpha or 0.25, gamma=2.0,
        from_logits=True, reduction=None)
    # Keras averages over the output units; ours sums (RetinaNet / TF Addons convention).
    np.testing.assert_allclose(ours, 3.0 * keras_loss(multi_hot, logits).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_sigmoid_focal_target_layouts():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 8)
    loss = SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25, reduction=None)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    from_one_hot = loss(one_hot, logits).numpy()
    for sparse in (labels, labels[:, None], labels.astype(np.float32)[:, None]):
        np.testing.assert_allclose(loss(sparse, logits).numpy(), from_one_hot, rtol=1e-6)
    binary_logits = logits[:, :1]
    binary = (labels % 2).astype(np.float32)
    expected = _sigmoid_focal_numpy(binary[:, None], binary_logits, 2.0, 0.25)
    for targets, z in ((binary, binary_logits), (binary[:, None], binary_logits),
                       (binary, binary_logits[:, 0])):
        np.testing.assert_allclose(loss(targets, z).numpy(), expected, rtol=1e-5, atol=1e-7)


# --- prior-adjusted losses ---------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_is_cross_entropy_of_shifted_logits(tau):
    labels, logits = _data()
    prior = np.array(COUNTS) / np.sum(COUNTS)
    expected = _np_cross_entropy(labels, logits + tau * np.log(prior))
    ours = LogitAdjustedCrossentropy(COUNTS, tau=tau, reduction=None)(labels, logits)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_balanced_softmax_equals_logit_adjusted_tau_one():
    labels, logits = _data(seed=3)
    balanced = BalancedSoftmaxCrossentropy(COUNTS, reduction=None)(labels, logits)
    adjusted = LogitAdjustedCrossentropy(COUNTS, tau=1.0, reduction=None)(labels, logits)
    np.testing.assert_allclose(balanced.numpy(), adjusted.numpy(), rtol=1e-5, atol=1e-6)
    # Ren et al.: p_j = n_j exp(z_j) / sum_k n_k exp(z_k).
    weighted = np.array(COUNTS) * np.exp(np.asarray(logits, np.float64))
    expected = -np.log(weighted[np.arange(len(labels)), labels] / weighted.sum(axis=1))
    np.testing.assert_allclose(balanced.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ldam_margins_and_loss():
    loss = LDAMCrossentropy(COUNTS, max_margin=0.5, scale=30.0, reduction=None)
    counts = np.array(COUNTS)
    constant = 0.5 / np.max(counts ** -0.25)  # C / n^(1/4), largest margin = max_margin
    np.testing.assert_allclose(loss.margins, constant / counts ** 0.25, rtol=1e-12)
    assert loss.margins.max() == pytest.approx(0.5)
    assert np.argmax(loss.margins) == np.argmin(counts)
    labels, logits = _data(scale=0.3)
    shifted = np.asarray(logits, np.float64).copy()
    shifted[np.arange(len(labels)), labels] -= loss.margins[labels]
    expected = _np_cross_entropy(labels, 30.0 * shifted)
    np.testing.assert_allclose(loss(labels, logits).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_posthoc_logit_adjustment():
    _, logits = _data()
    adjusted = losses.posthoc_logit_adjustment(logits, COUNTS, tau=1.5)
    prior = np.array(COUNTS) / np.sum(COUNTS)
    np.testing.assert_allclose(adjusted.numpy(), logits - 1.5 * np.log(prior), rtol=1e-6, atol=1e-6)
    offsets = losses.logit_adjustment_offsets(COUNTS, tau=1.5)
    np.testing.assert_allclose(offsets, -1.5 * np.log(prior), rtol=1e-6)
    # With tau = 1 the offsets undo what logit-adjusted training added: CE is unchanged.
    labels, _ = _data()
    trained = LogitAdjustedCrossentropy(COUNTS, tau=1.0, reduction=None)(labels, logits)
    plain = losses.sparse_cross_entropy(labels, logits - losses.logit_adjustment_offsets(COUNTS))
    np.testing.assert_allclose(trained.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)


# --- weighted recall --------------------------------------------------------------------------

def test_weighted_recall_weights_exactly_the_target_examples():
    labels, logits = _data(batch=20, seed=4)
    cross_entropy = _np_cross_entropy(labels, logits)
    loss = WeightedRecallCrossentropy(target_class=2, recall_weight=7.0, reduction=None)
    for y in (labels, labels[:, None], labels.astype(np.float32), labels.astype(np.float32)[:, None]):
        ratio = loss(y, logits).numpy() / cross_entropy
        np.testing.assert_allclose(ratio, np.where(labels == 2, 7.0, 1.0), rtol=1e-5)
    # Reduced (the model.fit path): the mean of the weighted per-example losses.
    reduced = WeightedRecallCrossentropy(target_class=2, recall_weight=7.0)(labels[:, None], logits)
    expected = np.mean(np.where(labels == 2, 7.0, 1.0) * cross_entropy)
    assert float(reduced) == pytest.approx(expected, rel=1e-5)


# --- properties shared by every loss ----------------------------------------------------------

@pytest.mark.parametrize("make", ALL_SPARSE_LOSSES, ids=LOSS_IDS)
def test_label_shapes_and_dtypes_agree(make):
    labels, logits = _data(seed=5)
    loss = _per_example(make())
    reference = loss(labels, logits).numpy()
    assert reference.shape == (len(labels),)
    for y in (labels[:, None], labels.astype(np.int64), labels.astype(np.float32),
              labels.astype(np.float32)[:, None]):
        np.testing.assert_allclose(loss(y, logits).numpy(), reference, rtol=1e-6)
    # Keras's default reduction is the mean of the per-example values.
    assert float(make()(labels[:, None], logits)) == pytest.approx(reference.mean(), rel=1e-5)


@pytest.mark.parametrize("make", ALL_SPARSE_LOSSES, ids=LOSS_IDS)
def test_finite_loss_and_gradients_at_extreme_logits(make):
    loss = _per_example(make())
    logits = tf.constant([[1e4, -1e4, 0.0, -1e4],
                          [-1e4, 1e4, -1e4, 1e4],
                          [1e4, 1e4, 1e4, 1e4],
                          [-1e4, -1e4, -1e4, 1e4],
                          [1e4, -1e4, -1e4, -1e4]], tf.float32)
    labels = tf.constant([0, 0, 2, 3, 3])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        values = loss(labels, logits)
    grad = tape.gradient(values, logits)
    assert np.all(np.isfinite(values.numpy())), values.numpy()
    assert np.all(np.isfinite(grad.numpy())), grad.numpy()


def test_sparse_focal_values_at_extreme_logits():
    logits = tf.constant([[1e4, -1e4, -1e4], [-1e4, 1e4, -1e4]], tf.float32)
    labels = tf.constant([0, 0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        values = SparseFocalCrossentropy(gamma=2.0, reduction=None)(labels, logits)
    grad = tape.gradient(values, logits).numpy()
    # Right with certainty: no loss, no gradient. Wrong by 2e4: loss 2e4, gradient -1/+1.
    np.testing.assert_allclose(values.numpy(), [0.0, 2e4], rtol=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1, 1, 0]], atol=1e-6)


def test_sigmoid_focal_values_and_gradients_at_extreme_logits():
    logits = tf.constant([[1e4], [-1e4], [1e4], [-1e4]], tf.float32)
    targets = tf.constant([1.0, 0.0, 0.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        values = SigmoidFocalCrossentropy(gamma=2.0, alpha=None, reduction=None)(targets, logits)
    grad = tape.gradient(values, logits).numpy()
    np.testing.assert_allclose(values.numpy(), [0, 0, 1e4, 1e4], rtol=1e-6)
    np.testing.assert_allclose(grad[:, 0], [0, 0, 1, -1], atol=1e-6)


@pytest.mark.parametrize("make", ALL_SPARSE_LOSSES, ids=LOSS_IDS)
def test_config_round_trip(make):
    loss = make()
    labels, logits = _data(seed=6)
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(labels, logits).numpy(), loss(labels, logits).numpy())


def test_sparse_cross_entropy_matches_keras():
    labels, logits = _data(seed=7)
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    np.testing.assert_allclose(losses.sparse_cross_entropy(labels[:, None].astype(np.float32), logits),
                               reference(labels, logits), rtol=1e-6)


def test_losses_train_in_plain_model_fit():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, (64, 1))
    for make in ALL_SPARSE_LOSSES:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(NUM_CLASSES)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=make())
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"])), make()
        assert history.history["loss"][1] < history.history["loss"][0], make()


# --- argument checks and the registry ---------------------------------------------------------

@pytest.mark.parametrize("make, argument, value", [
    (lambda: SparseFocalCrossentropy(gamma=-1.0), "gamma", "-1.0"),
    (lambda: SparseFocalCrossentropy(alpha=[0.5, -0.1]), "alpha", "[0.5, -0.1]"),
    (lambda: SparseFocalCrossentropy(alpha=[[0.5, 1.0]]), "alpha", "[[0.5, 1.0]]"),
    (lambda: SigmoidFocalCrossentropy(gamma=float("nan")), "gamma", "nan"),
    (lambda: SigmoidFocalCrossentropy(alpha=1.5), "alpha", "1.5"),
    (lambda: LogitAdjustedCrossentropy([10, -1, 3]), "class_counts", "[10.0, -1.0, 3.0]"),
    (lambda: LogitAdjustedCrossentropy([0, 0, 0]), "class_counts", "[0.0, 0.0, 0.0]"),
    (lambda: LogitAdjustedCrossentropy([10, 3], tau=-1.0), "tau", "-1.0"),
    (lambda: BalancedSoftmaxCrossentropy([[1, 2]]), "class_counts", "[[1, 2]]"),
    (lambda: LDAMCrossentropy([10, 3], max_margin=0.0), "max_margin", "0.0"),
    (lambda: LDAMCrossentropy([10, 3], scale=-2.0), "scale", "-2.0"),
    (lambda: WeightedRecallCrossentropy(target_class=-1, recall_weight=2.0), "target_class", "-1"),
    (lambda: WeightedRecallCrossentropy(target_class=True, recall_weight=2.0), "target_class", "True"),
    (lambda: WeightedRecallCrossentropy(target_class=1, recall_weight=0.0), "recall_weight", "0.0"),
])
def test_bad_arguments_raise_naming_the_argument(make, argument, value):
    with pytest.raises(ArgumentError, match=rf"^{argument} .*got {re.escape(value)}\.$") as info:
        make()
    assert info.value.argument == argument


def test_bad_inputs_raise():
    labels, logits = _data()
    with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
        SparseFocalCrossentropy()(tf.one_hot(labels, NUM_CLASSES), logits)
    with pytest.raises(ValueError, match="configured for 3 classes"):
        LogitAdjustedCrossentropy([5, 3, 1])(labels, logits)
    with pytest.raises(ArgumentError, match=r"^target_class must be a class index in 0\.\.3 \(4 classes\), "
                                            r"got 9\.$"):
        WeightedRecallCrossentropy(target_class=9, recall_weight=2.0)(labels, logits)
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        LogitAdjustedCrossentropy([5, -1, 1])


@pytest.mark.parametrize("name, expected", [
    ("cross_entropy", keras.losses.SparseCategoricalCrossentropy),
    ("focal", SparseFocalCrossentropy),
    ("sigmoid_focal", SigmoidFocalCrossentropy),
    ("logit_adjusted", LogitAdjustedCrossentropy),
    ("balanced_softmax", BalancedSoftmaxCrossentropy),
    ("ldam", LDAMCrossentropy),
])
def test_make_loss(name, expected):
    loss = losses.make_loss(name, class_counts=COUNTS, num_classes=NUM_CLASSES, gamma=1.5,
                            tau=0.7, reduction=None)
    assert type(loss) is expected
    labels, logits = _data()
    assert loss(labels, logits).shape == (len(labels),)
    if name == "logit_adjusted":
        assert loss.tau == 0.7
    if name in ("focal", "sigmoid_focal"):
        assert loss.gamma == 1.5


@pytest.mark.parametrize("name, kwargs, argument, message", [
    ("hinge", {}, "name", r"^name must be one of cross_entropy, focal, sigmoid_focal, logit_adjusted, "
                          r"balanced_softmax, ldam, asymmetric, got 'hinge'\.$"),
    ("logit_adjusted", {}, "class_counts", r"^class_counts is needed by the loss 'logit_adjusted'.*got None"),
    ("ldam", {"class_counts": COUNTS, "num_classes": 3}, "class_counts",
     r"^class_counts has 4 values but there are 3 classes, got \[500.0, 120.0, 30.0, 7.0\]"),
])
def test_make_loss_errors(name, kwargs, argument, message):
    with pytest.raises(ArgumentError, match=message) as info:
        losses.make_loss(name, **kwargs)
    assert info.value.argument == argument
