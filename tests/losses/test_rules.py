"""Oracle tests of the reweighting rules: Keras semantics, Cui's and Tan's formulas, distribution.

Rules are driven directly (no Trainer) with small tensors, eagerly, in tf.function and under MirroredStrategy.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import (
    BalancedSoftmaxCrossentropy,
    ClassWeights,
    Compose,
    DeferredReweighting,
    EqualizationV2,
    LDAMCrossentropy,
    LogitAdjustedCrossentropy,
    SparseFocalCrossentropy,
    TargetClassWeight,
    TrainingContext,
)
from trainer.checks import ArgumentError

NUM_CLASSES = 4
COUNTS = [800.0, 150.0, 40.0, 6.0]


def _context(epoch=0, step=0):
    return TrainingContext(epoch=tf.constant(epoch, tf.int64), step=tf.constant(step, tf.int64))


def _batch(batch=16, seed=0, probabilities=(0.6, 0.25, 0.1, 0.05)):
    """Imbalanced labels, random logits and the softmax cross-entropy gradient / batch."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_CLASSES, size=batch, p=probabilities).astype(np.int32)
    logits = (2.0 * rng.standard_normal((batch, NUM_CLASSES))).astype(np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    grad = (probs - np.eye(NUM_CLASSES)[labels]) / batch
    return labels, logits, grad.astype(np.float32)


def _built(rule):
    rule.build(NUM_CLASSES)
    return rule


# --- ClassWeights -----------------------------------------------------------------------------

def test_class_weights_scale_equals_gradient_of_weighted_losses():
    labels, logits, _ = _batch()
    weights = np.array([0.5, 1.0, 3.0, 8.0], np.float32)
    logits = tf.constant(logits)
    dense = tf.keras.layers.Dense(NUM_CLASSES)
    features = tf.constant(np.random.default_rng(1).standard_normal((16, 3)), tf.float32)
    dense.build((None, 3))
    rule = _built(ClassWeights(weights))
    # Keras class_weight semantics: gradient of sum_i w[y_i] loss_i / batch.
    with tf.GradientTape(persistent=True) as tape:
        out = dense(features)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, out)
        weighted = tf.reduce_sum(tf.gather(weights, labels) * per_example) / 16
        plain = tf.reduce_sum(per_example) / 16
    expected = tape.gradient(weighted, dense.trainable_variables)
    grad_logits = tape.gradient(plain, out)
    reweighted = rule(labels, out, grad_logits, _context())
    actual = tape.gradient(out, dense.trainable_variables, output_gradients=reweighted)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-7)


def test_inverse_frequency_weights():
    rule = ClassWeights.inverse_frequency(COUNTS)
    expected = (1.0 / np.array(COUNTS))
    expected *= NUM_CLASSES / expected.sum()
    np.testing.assert_allclose(rule.get_config()["weights"], expected, rtol=1e-6)
    assert np.mean(rule.get_config()["weights"]) == pytest.approx(1.0)
    assert rule.prior_correction == "inverse_frequency"


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999])
def test_effective_number_weights_follow_cui(beta):
    counts = np.array(COUNTS)
    rule = ClassWeights.effective_number(COUNTS, beta=beta)
    cui = (1.0 - beta) / (1.0 - beta ** counts)  # 1 / effective number, Cui et al. eq. 3
    cui = cui / cui.sum() * NUM_CLASSES
    np.testing.assert_allclose(rule.get_config()["weights"], cui, rtol=1e-6)
    assert rule.prior_correction == "effective_number"
    if beta == 0.0:
        np.testing.assert_allclose(cui, 1.0)


def test_effective_number_tends_to_inverse_frequency():
    near_one = ClassWeights.effective_number(COUNTS, beta=1 - 1e-9).get_config()["weights"]
    inverse = ClassWeights.inverse_frequency(COUNTS).get_config()["weights"]
    np.testing.assert_allclose(near_one, inverse, rtol=1e-4)


@pytest.mark.parametrize("make, argument, message", [
    (lambda: ClassWeights.inverse_frequency([10, -2, 4]), "class_counts",
     r"^class_counts must be non-negative.*\[1\].*got \[10.0, -2.0, 4.0\]"),
    (lambda: ClassWeights.inverse_frequency([0, 0]), "class_counts",
     r"^class_counts are all zero.*got \[0.0, 0.0\]"),
    (lambda: ClassWeights.effective_number([10, 5], beta=1.0), "beta", r"^beta must be in \[0, 1\), got 1.0"),
    (lambda: ClassWeights.effective_number([10, 5], beta=-0.1), "beta", r"^beta .*got -0.1"),
    (lambda: ClassWeights([1.0, 2.0], prior_correction="magic"), "prior_correction",
     r"^prior_correction must be one of .*got 'magic'"),
    (lambda: ClassWeights([1.0, float("inf")]), "weights", r"^weights must be finite, got \[1.0, inf\]"),
    (lambda: ClassWeights("heavy"), "weights", r"^weights must be numbers, got 'heavy'"),
    (lambda: TargetClassWeight(-1, 2.0), "target_class", r"^target_class .*got -1"),
    (lambda: TargetClassWeight(1, float("nan")), "weight", r"^weight must be a positive number, got nan"),
    (lambda: EqualizationV2(gamma=0.0), "gamma", r"^gamma .*got 0.0"),
    (lambda: EqualizationV2(mu=float("inf")), "mu", r"^mu must be a finite number, got inf"),
    (lambda: EqualizationV2(alpha=-1.0), "alpha", r"^alpha .*got -1.0"),
    (lambda: DeferredReweighting(ClassWeights([1, 2]), start_epoch=-1), "start_epoch",
     r"^start_epoch must be a non-negative integer, got -1"),
    (lambda: DeferredReweighting("effective_number", start_epoch=1), "rule",
     r"^rule must be a ReweightingRule, got 'effective_number'"),
    (lambda: Compose(), "rules", r"^rules must hold at least one rule"),
    (lambda: Compose(ClassWeights([1, 2]), "eqlv2"), "rules", r"^rules must be ReweightingRule .*'eqlv2'"),
    (lambda: EqualizationV2().build(1), "num_classes", r"^num_classes must be an integer >= 2, got 1"),
    (lambda: TargetClassWeight(3, 2.0).build(3), "target_class",
     r"^target_class must be a class index in 0\.\.2 \(3 classes\), got 3"),
])
def test_bad_arguments_raise(make, argument, message):
    with pytest.raises(ArgumentError, match=message) as info:
        make()
    assert info.value.argument == argument


# --- DRW ---------------------------------------------------------------------------------------

def test_deferred_reweighting_is_identity_then_the_rule():
    labels, logits, grad = _batch()
    inner = ClassWeights([1.0, 2.0, 4.0, 8.0])
    rule = _built(DeferredReweighting(inner, start_epoch=3))
    expected_after = grad * np.array([1.0, 2.0, 4.0, 8.0], np.float32)[labels][:, None]

    @tf.function
    def apply(epoch):
        return rule(labels, logits, grad, TrainingContext(epoch=epoch, step=epoch * 10))

    for epoch in range(6):
        out = apply(tf.constant(epoch, tf.int64)).numpy()
        np.testing.assert_allclose(out, grad if epoch < 3 else expected_after, rtol=1e-6)
    assert apply.experimental_get_tracing_count() == 1
    # A fresh rule (a resumed run) switches at the same epoch: it keeps no epoch state.
    resumed = _built(DeferredReweighting.from_config(rule.get_config()))
    np.testing.assert_allclose(resumed(labels, logits, grad, _context(epoch=3)).numpy(),
                               expected_after, rtol=1e-6)
    np.testing.assert_allclose(resumed(labels, logits, grad, _context(epoch=2)).numpy(), grad)


# --- EQL v2 ----------------------------------------------------------------------------------

class NumpyEqualizationV2:
    """Tan et al. 2021 (authors' mmdet code), with the softmax mapping of positives/negatives."""

    def __init__(self, num_classes, gamma=12.0, mu=0.8, alpha=4.0):
        self.pos = np.zeros(num_classes)
        self.neg = np.zeros(num_classes)
        self.gamma, self.mu, self.alpha = gamma, mu, alpha
        self.started = False

    def weights(self):
        if not self.started:  # no gradient information at the beginning
            return np.ones_like(self.pos), np.ones_like(self.pos)
        g = self.pos / (self.neg + 1e-10)
        r = 1.0 / (1.0 + np.exp(-self.gamma * (g - self.mu)))  # f(g_j): negative weight
        q = 1.0 + self.alpha * (1.0 - r)  # positive weight
        return q, r

    def step(self, labels, grad):
        q, r = self.weights()
        out = np.array(grad, np.float64)
        for i, y in enumerate(labels):
            for j in range(out.shape[1]):
                out[i, j] *= q[j] if j == y else r[j]
        for i, y in enumerate(labels):
            for j in range(out.shape[1]):
                if j == y:
                    self.pos[j] += abs(out[i, j])
                else:
                    self.neg[j] += abs(out[i, j])
        self.started = True
        return out


def test_equalization_v2_matches_numpy_reimplementation():
    rule = _built(EqualizationV2(gamma=12.0, mu=0.8, alpha=4.0))
    oracle = NumpyEqualizationV2(NUM_CLASSES)
    step = tf.function(lambda y, z, g: rule(y, z, g, _context()))
    for seed in range(6):
        probabilities = (0.5, 0.3, 0.2, 0.0) if seed < 3 else (0.4, 0.3, 0.2, 0.1)
        labels, logits, grad = _batch(batch=12, seed=seed, probabilities=probabilities)
        q, r = oracle.weights()
        np.testing.assert_allclose(rule.weights()[0].numpy(), q, rtol=1e-5)
        np.testing.assert_allclose(rule.weights()[1].numpy(), r, rtol=1e-4, atol=1e-9)
        expected = oracle.step(labels, grad)
        np.testing.assert_allclose(step(labels, logits, grad).numpy(), expected,
                                   rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(rule.positive_gradients.numpy(), oracle.pos, rtol=1e-5)
        np.testing.assert_allclose(rule.negative_gradients.numpy(), oracle.neg, rtol=1e-5)
    q, r = oracle.weights()
    np.testing.assert_allclose(rule.class_weights().numpy(), q, rtol=1e-5)
    # Class 3 was absent for three steps: its negatives were suppressed, its positives boosted.
    assert r[3] < r[0] and q[3] > q[0]


# --- Compose ---------------------------------------------------------------------------------

def test_compose_applies_rules_in_order():
    labels, logits, grad = _batch(seed=2)
    weights = [1.0, 2.0, 5.0, 9.0]
    for order in ((0, 1), (1, 0)):
        parts = [ClassWeights(weights), EqualizationV2()]
        composed = _built(Compose(*(parts[i] for i in order)))
        reference = [_built(ClassWeights(weights)), _built(EqualizationV2())]
        for step in range(3):
            labels, logits, grad = _batch(seed=10 + step)
            expected = grad
            for i in order:
                expected = reference[i](labels, logits, expected, _context())
            np.testing.assert_allclose(composed(labels, logits, grad, _context()).numpy(),
                                       expected.numpy(), rtol=1e-6)
        np.testing.assert_allclose(parts[1].positive_gradients.numpy(),
                                   reference[1].positive_gradients.numpy(), rtol=1e-6)
    # The order matters for EQL v2: it accumulates what it receives.
    first = _built(Compose(ClassWeights(weights), EqualizationV2()))
    second = _built(Compose(EqualizationV2(), ClassWeights(weights)))
    for rule in (first, second):
        rule(labels, logits, grad, _context())
    assert not np.allclose(first.rules[1].positive_gradients.numpy(),
                           second.rules[0].positive_gradients.numpy())
    product = _built(Compose(ClassWeights([1, 2, 3, 4]), TargetClassWeight(2, 10.0)))
    np.testing.assert_allclose(product.class_weights().numpy(), [1, 2, 30, 4])


# --- the prior-counted-twice warning ----------------------------------------------------------

PRIOR_LOSSES = [LogitAdjustedCrossentropy(COUNTS, tau=1.0), BalancedSoftmaxCrossentropy(COUNTS)]


@pytest.mark.parametrize("loss", PRIOR_LOSSES, ids=["logit_adjusted", "balanced_softmax"])
@pytest.mark.parametrize("rule, resampled", [
    (ClassWeights.inverse_frequency(COUNTS), False),
    (ClassWeights.effective_number(COUNTS), False),
    (None, True),
    (DeferredReweighting(ClassWeights.effective_number(COUNTS), start_epoch=5), False),
    (Compose(TargetClassWeight(1, 2.0), ClassWeights.inverse_frequency(COUNTS)), False),
    (losses.make_rule("drw", num_classes=4, class_counts=COUNTS, drw_start_epoch=1,
                      drw_rule="inverse_frequency"), False),
], ids=["inverse_frequency", "effective_number", "resampled", "drw", "compose", "make_rule"])
def test_prior_twice_warning_fires(loss, rule, resampled):
    with pytest.warns(UserWarning, match="counts the prior twice"):
        assert losses.warn_if_prior_counted_twice(loss, rule, resampled=resampled)


@pytest.mark.parametrize("loss, rule, resampled", [
    (LogitAdjustedCrossentropy(COUNTS), None, False),
    (LogitAdjustedCrossentropy(COUNTS), ClassWeights([1.0, 2.0, 3.0, 4.0]), False),
    (LogitAdjustedCrossentropy(COUNTS), TargetClassWeight(3, 5.0), False),
    (LogitAdjustedCrossentropy(COUNTS), EqualizationV2(), False),
    (LogitAdjustedCrossentropy(COUNTS, tau=0.0), ClassWeights.inverse_frequency(COUNTS), True),
    (SparseFocalCrossentropy(), ClassWeights.inverse_frequency(COUNTS), True),
    (LDAMCrossentropy(COUNTS), DeferredReweighting(ClassWeights.effective_number(COUNTS), 5), False),
    (None, ClassWeights.effective_number(COUNTS), True),
])
def test_prior_twice_warning_stays_quiet(loss, rule, resampled):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not losses.warn_if_prior_counted_twice(loss, rule, resampled=resampled)


# --- configs and checkpoints ------------------------------------------------------------------

def _all_rules():
    return [
        ClassWeights([1.0, 2.0, 3.0, 4.0]),
        ClassWeights.effective_number(COUNTS, beta=0.999),
        TargetClassWeight(2, 6.0),
        DeferredReweighting(EqualizationV2(), start_epoch=1),
        EqualizationV2(gamma=10.0, mu=0.7, alpha=3.0),
        Compose(ClassWeights.inverse_frequency(COUNTS), EqualizationV2()),
    ]


RULE_IDS = ["class_weights", "effective_number", "target_class", "drw_eqlv2", "eqlv2", "compose"]


@pytest.mark.parametrize("index", range(6), ids=RULE_IDS)
def test_rule_config_round_trip(index):
    rule = _all_rules()[index]
    clone = losses.deserialize_rule(losses.serialize_rule(rule))
    assert type(clone) is type(rule)
    assert clone.get_config() == rule.get_config()
    if isinstance(rule, ClassWeights):
        assert clone.prior_correction == rule.prior_correction


def _variables(rule):
    return [v.numpy() for v in sorted(rule.variables, key=lambda v: v.name)]


@pytest.mark.parametrize("index", range(6), ids=RULE_IDS)
def test_rule_checkpoint_round_trip(index, tmp_path):
    rule = _built(_all_rules()[index])
    for seed in range(3):
        labels, logits, grad = _batch(seed=seed)
        rule(labels, logits, grad, _context(epoch=seed))
    path = tf.train.Checkpoint(rule=rule).save(str(tmp_path / "rule"))
    restored = _built(losses.deserialize_rule(losses.serialize_rule(rule)))
    tf.train.Checkpoint(rule=restored).restore(path).assert_consumed()
    for a, b in zip(_variables(rule), _variables(restored)):
        np.testing.assert_array_equal(a, b)
    labels, logits, grad = _batch(seed=9)
    np.testing.assert_allclose(restored(labels, logits, grad, _context(epoch=3)).numpy(),
                               rule(labels, logits, grad, _context(epoch=3)).numpy())


# --- MirroredStrategy over two logical CPUs ---------------------------------------------------




def _run(strategy, rule, batches, epoch=2):
    """Builds `rule` under `strategy` and applies it to each global batch, split per replica."""
    with strategy.scope():
        rule.build(NUM_CLASSES)

    @tf.function
    def step(labels, logits, grad):
        def split(value):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.split(value, ctx.num_replicas_in_sync)[ctx.replica_id_in_sync_group])

        def replica_fn(y, z, g):
            return rule(y, z, g, _context(epoch=epoch))

        per_replica = strategy.run(replica_fn, args=(split(labels), split(logits), split(grad)))
        return tf.concat(strategy.experimental_local_results(per_replica), axis=0)

    return [step(*batch).numpy() for batch in batches]


@pytest.mark.parametrize("index", range(6), ids=RULE_IDS)
def test_rules_under_mirrored_strategy_equal_default(index, mirrored):
    assert mirrored.num_replicas_in_sync == 2
    batches = [_batch(batch=16, seed=20 + i) for i in range(4)]
    single_rule, mirrored_rule = _all_rules()[index], _all_rules()[index]
    single = _run(tf.distribute.get_strategy(), single_rule, batches)
    distributed = _run(mirrored, mirrored_rule, batches)
    for a, b in zip(single, distributed):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)
    for a, b in zip(_variables(single_rule), _variables(mirrored_rule)):
        np.testing.assert_allclose(b, a, rtol=1e-5)
    for rule in (single_rule, mirrored_rule):
        for variable in rule.variables:
            if "gradients" in variable.name:
                assert np.all(variable.numpy() > 0)  # EQL v2 statistics were collected
    # Every replica holds the same (all-reduced) statistics.
    for variable in mirrored_rule.variables:
        values = [v.numpy() for v in mirrored.experimental_local_results(variable)]
        for value in values[1:]:
            np.testing.assert_array_equal(value, values[0])


# --- the registry ----------------------------------------------------------------------------

def test_make_rule():
    assert losses.make_rule("none", num_classes=4) is None
    manual = losses.make_rule("manual", num_classes=4, class_weights=[1, 2, 3, 4])
    assert type(manual) is ClassWeights and manual.prior_correction is None
    inverse = losses.make_rule("inverse_frequency", num_classes=4, class_counts=COUNTS)
    assert inverse.prior_correction == "inverse_frequency"
    effective = losses.make_rule("effective_number", num_classes=4, class_counts=COUNTS, beta=0.99)
    assert effective.get_config() == ClassWeights.effective_number(COUNTS, 0.99).get_config()
    target = losses.make_rule("target_class", num_classes=4, target_class=3, target_weight=5.0)
    assert target.get_config() == {"target_class": 3, "weight": 5.0}
    drw = losses.make_rule("drw", num_classes=4, class_counts=COUNTS, drw_start_epoch=2)
    assert isinstance(drw, DeferredReweighting) and drw.start_epoch == 2
    assert drw.rule.prior_correction == "effective_number"
    drw_eql = losses.make_rule("drw", num_classes=4, drw_start_epoch=0, drw_rule="eqlv2")
    assert isinstance(drw_eql.rule, EqualizationV2)
    eql = losses.make_rule("eqlv2", num_classes=4, eqlv2_gamma=10.0)
    assert eql.get_config() == {"gamma": 10.0, "mu": 0.8, "alpha": 4.0}


@pytest.mark.parametrize("name, kwargs, argument, message", [
    ("focal_weights", {}, "name", r"^name must be one of none, manual, inverse_frequency, "
                                  r"effective_number, target_class, drw, eqlv2, got 'focal_weights'\.$"),
    ("manual", {}, "class_weights", r"^class_weights is needed by the rule 'manual'.*got None"),
    ("manual", {"class_weights": [1, 2, 3]}, "class_weights",
     r"^class_weights has 3 values but there are 4 classes, got \[1.0, 2.0, 3.0\]"),
    ("manual", {"class_weights": [1, -2, 3, 4]}, "class_weights",
     r"^class_weights must be non-negative, got \[1.0, -2.0, 3.0, 4.0\]"),
    ("inverse_frequency", {}, "class_counts", r"^class_counts is needed by the rule 'inverse_frequency'"),
    ("effective_number", {"class_counts": COUNTS, "beta": 1.5}, "beta",
     r"^beta must be in \[0.*, 1.*\), got 1.5"),
    ("effective_number", {"class_counts": [5, -1, 3, 2]}, "class_counts",
     r"^class_counts must be non-negative, but classes \[1\].*got \[5.0, -1.0, 3.0, 2.0\]"),
    ("target_class", {"target_weight": 2.0}, "target_class",
     r"^target_class is needed by the rule 'target_class'"),
    ("target_class", {"target_class": 4, "target_weight": 2.0}, "target_class",
     r"^target_class must be a class index in 0\.\.3 \(4 classes\), got 4"),
    ("target_class", {"target_class": 1, "target_weight": 0.0}, "target_weight",
     r"^target_weight must be a positive number, got 0.0"),
    ("drw", {"class_counts": COUNTS}, "drw_start_epoch", r"^drw_start_epoch is needed by the rule 'drw'"),
    ("drw", {"drw_start_epoch": -2}, "drw_start_epoch",
     r"^drw_start_epoch must be a non-negative integer, got -2"),
    ("drw", {"drw_start_epoch": 1, "drw_rule": "drw"}, "drw_rule", r"^drw_rule must be one of .*got 'drw'"),
])
def test_make_rule_errors(name, kwargs, argument, message):
    with pytest.raises(ArgumentError, match=message) as info:
        losses.make_rule(name, num_classes=4, **kwargs)
    assert info.value.argument == argument
