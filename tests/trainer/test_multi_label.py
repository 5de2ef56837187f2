"""`MultiLabelTask`: L sigmoid labels, against Keras `fit`, NumPy counts and a brute-force search.

Oracles: SGD and Adam steps of the Trainer with `ClassWeights` over the `2L` label-value classes
equal Keras `fit` with `BinaryCrossentropy(from_logits=True)` and the per-label weights as a
per-(example, label) `sample_weight` (default strategy and MirroredStrategy on two logical CPUs);
the confusion matrix and per-label metrics are NumPy counts; `AsymmetricLoss` is the paper's formula
on probabilities; per-label thresholds are the best-precision cut-off found by trying every one.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from losses import AsymmetricLoss, ClassWeights, SigmoidFocalCrossentropy
from trainer import Trainer
from trainer.checks import ArgumentError
from trainer.decisions.per_label import LabelThresholds, choose_label_thresholds
from trainer.metrics import label_average_precision, per_label_metrics, precision_recall_curve
from trainer.tasks import MultiLabelTask

FEATURES, LABELS = 5, 3
PREVALENCE = np.array([0.5, 0.2, 0.06])


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(LABELS)])


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, FEATURES)).astype(np.float32)
    score = features[:, :LABELS] + rng.normal(scale=0.7, size=(n, LABELS))
    cut = np.array([np.quantile(score[:, j], 1 - PREVALENCE[j]) for j in range(LABELS)])
    labels = (score > cut).astype(np.int32)
    return features, labels


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _keras_fit(features, labels, sample_weight, optimizer, batch_size, epochs=1):
    """Keras `fit` on the same model with a `[batch, L, 1]` head, so `sample_weight [N, L]` weighs each
    label's binary cross-entropy (Keras divides by the N x L weighted values)."""
    base = _mlp()
    model = keras.Sequential([base, keras.layers.Reshape((LABELS, 1))])
    model.compile(optimizer=optimizer, jit_compile=False,
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(features, labels[..., None].astype(np.float32), sample_weight=sample_weight,
              batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return base


def _label_weights(w, labels):
    """`w[2l + y_il]`: the Trainer's class weights as per-(example, label) sample weights."""
    return w[2 * np.arange(LABELS) + labels].astype(np.float32)


@pytest.mark.parametrize("optimizer, epochs", [(lambda: keras.optimizers.SGD(0.5), 1),
                                               (lambda: keras.optimizers.Adam(0.01), 3)])
def test_label_weighted_steps_equal_keras_fit_with_per_label_sample_weights(optimizer, epochs):
    features, labels = _data()
    w = np.array([1.0, 1.0, 0.5, 2.0, 0.3, 6.0], np.float32)
    trainer = Trainer(model=_mlp, optimizer=optimizer(), reweighting=ClassWeights(w),
                      task=MultiLabelTask(), steps_per_loop=3)
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(16), epochs=epochs)
    model = _keras_fit(features, labels, _label_weights(w, labels), optimizer(), 16, epochs)
    for ours, theirs in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
    assert not np.allclose(_weights(trainer.model)[0], _weights(_mlp())[0], atol=1e-3)  # it trained
    assert trainer.num_classes == 2 * LABELS


def test_under_a_mirrored_strategy_with_sample_weights_the_step_is_the_same(mirrored):
    features, labels = _data(n=42)  # the last batch (10) splits unevenly
    w = np.array([1.0, 1.0, 0.5, 2.0, 0.3, 6.0], np.float32)
    per_example = np.linspace(0.5, 2.0, len(features)).astype(np.float32)
    with mirrored.scope():
        trainer = Trainer(model=_mlp, optimizer=keras.optimizers.SGD(0.5), reweighting=ClassWeights(w),
                          task=MultiLabelTask(), strategy=mirrored, steps_per_loop=2)
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels, per_example)).batch(16), epochs=1)
    model = _keras_fit(features, labels, per_example[:, None] * _label_weights(w, labels),
                       keras.optimizers.SGD(0.5), 16)
    for ours, theirs in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


def test_inverse_frequency_weighs_each_labels_positives_by_its_negatives_over_positives():
    _, labels = _data(n=400)
    counts = MultiLabelTask.class_counts(labels)
    np.testing.assert_array_equal(counts[1::2], labels.sum(axis=0))
    np.testing.assert_array_equal(counts[0::2], len(labels) - labels.sum(axis=0))
    rule = ClassWeights.inverse_frequency(counts)
    rule.build(2 * LABELS)
    w = rule.class_weights().numpy()
    np.testing.assert_allclose(w[1::2] / w[0::2], counts[0::2] / counts[1::2], rtol=1e-6)


def test_confusion_matrix_metrics_and_collected_logits_are_per_label_counts():
    features, labels = _data(n=40, seed=3)
    trainer = Trainer(model=_mlp, task=MultiLabelTask(label_names=["a", "b", "c"]))
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(16)
    raw = np.asarray(trainer.model(features))
    logits, got = trainer.collect_logits(data)
    np.testing.assert_allclose(logits, raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, labels)
    matrix = trainer.evaluate(data)["confusion_matrix"]
    np.testing.assert_array_equal(matrix, trainer.evaluation(data, collect_logits=True).confusion_matrix)
    metrics = per_label_metrics(matrix, ["a", "b", "c"])
    predicted = raw > 0
    for j in range(LABELS):
        hits = np.sum(predicted[:, j] & (labels[:, j] == 1))
        assert metrics["recall"][j] == pytest.approx(hits / labels[:, j].sum())
        assert metrics["precision"][j] == pytest.approx(hits / max(predicted[:, j].sum(), 1)) \
            or predicted[:, j].sum() == 0
        assert metrics["positives"][j] == labels[:, j].sum()
    assert metrics["hamming_accuracy"] == pytest.approx(np.mean(predicted == (labels == 1)))
    np.testing.assert_array_equal(trainer.predict_classes(features), predicted.astype(np.int64))
    np.testing.assert_allclose(trainer.predict(features), 1 / (1 + np.exp(-raw)), rtol=1e-5)
    ap = label_average_precision(logits, labels)
    for j in range(LABELS):  # a hand count: mean over positives of the precision at their rank
        order = np.argsort(-raw[:, j])
        hits = labels[order, j] == 1
        want = np.mean((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits])
        assert ap[j] == pytest.approx(want)
    assert MultiLabelTask(label_names=["a", "b", "c"]).class_names(3) == \
        ["not a", "a", "not b", "b", "not c", "c"]


def test_a_margin_rule_shifts_each_labels_logit():
    features, labels = _data()

    class Margins(ClassWeights):
        def logit_offsets(self, context):
            return tf.constant([0.0, -1.0, 0.5, 0.0, 0.0, -2.0])

    trainer = Trainer(model=_mlp, optimizer=keras.optimizers.SGD(0.5),
                      reweighting=Margins(np.ones(6)), task=MultiLabelTask())
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(48), epochs=1)
    base = _mlp()  # oracle: Keras on logits shifted by o[2l+1] - o[2l] = [-1, -0.5, -2]
    shifted = keras.Sequential([base, keras.layers.Lambda(lambda z: z + tf.constant([-1.0, -0.5, -2.0])),
                                keras.layers.Reshape((LABELS, 1))])
    shifted.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                    loss=keras.losses.BinaryCrossentropy(from_logits=True))
    shifted.fit(features, labels[..., None].astype(np.float32), batch_size=48, shuffle=False, verbose=0)
    for ours, theirs in zip(_weights(trainer.model), _weights(base)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


def _asl_reference(y, p, gamma_pos, gamma_neg, clip):
    p_m = np.maximum(p - clip, 0.0)
    return -(y * (1 - p) ** gamma_pos * np.log(p) + (1 - y) * p_m ** gamma_neg * np.log(1 - p_m))


def test_asymmetric_loss_is_the_papers_formula_and_finite_at_extreme_logits():
    rng = np.random.default_rng(0)
    z = rng.uniform(-4, 4, size=(64, 4))
    y = (rng.random((64, 4)) < 0.3).astype(np.float32)
    p = 1 / (1 + np.exp(-z))
    for gamma_pos, gamma_neg, clip in [(0.0, 4.0, 0.05), (1.0, 2.0, 0.0), (0.0, 0.5, 0.2)]:
        loss = AsymmetricLoss(gamma_pos, gamma_neg, clip, reduction=None)
        np.testing.assert_allclose(loss(y, z.astype(np.float32)).numpy(),
                                   _asl_reference(y, p, gamma_pos, gamma_neg, clip).mean(axis=1),
                                   rtol=1e-4, atol=1e-6)
    bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
    np.testing.assert_allclose(AsymmetricLoss(0, 0, 0, reduction=None)(y, z.astype(np.float32)),
                               bce(y, z.astype(np.float32)), rtol=1e-5)
    extreme = tf.constant([[1e4, -1e4, 1e4, -1e4]])
    with tf.GradientTape() as tape:
        tape.watch(extreme)
        value = AsymmetricLoss(1.0, 4.0, 0.05, reduction=None)(tf.constant([[1.0, 1.0, 0.0, 0.0]]), extreme)
    assert np.all(np.isfinite(value.numpy())) and np.all(np.isfinite(tape.gradient(value, extreme).numpy()))
    assert value.numpy()[0] == pytest.approx((0 + 1e4 + (0.95 ** 4) * -np.log(0.05) + 0) / 4, rel=1e-4)


# Keras's loss on [batch, L]: the asymmetric loss averages over labels as the Trainer's positions do;
# the sigmoid focal loss sums over them, so the Trainer's mean over positions is 1/L of it.
@pytest.mark.parametrize("loss, keras_scale", [(AsymmetricLoss(), 1.0),
                                               (SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25), 1 / LABELS)])
def test_sigmoid_losses_train_a_multi_label_model_as_keras_does(loss, keras_scale):
    features, labels = _data()
    trainer = Trainer(model=_mlp, optimizer=keras.optimizers.SGD(0.5), loss=loss, task=MultiLabelTask())
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(16), epochs=1)
    model = _mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                  loss=lambda y, z: keras_scale * loss.call(y, z))
    model.fit(features, labels.astype(np.float32), batch_size=16, shuffle=False, verbose=0)
    for ours, theirs in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


def test_label_thresholds_are_the_best_precision_cutoffs_that_reach_each_target():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 3)) < [0.3, 0.1, 0.5]).astype(np.int64)
    logits = rng.normal(size=(400, 3)) + 1.5 * labels
    targets = {0: 0.8, "c": 0.95}
    thresholds = choose_label_thresholds(logits, labels, targets, label_names=["a", "b", "c"],
                                         confidence=0.5, estimator="empirical")
    decided = thresholds.decide(logits)
    np.testing.assert_array_equal(decided[:, 1], (logits[:, 1] > 0).astype(np.int64))  # no target
    for j, target in ((0, 0.8), (2, 0.95)):
        best = 0.0  # brute force: every cut-off "predict when z >= s" over the scores s
        for s in np.unique(logits[:, j]):
            chosen = logits[:, j] >= s
            recall = np.sum(chosen & (labels[:, j] == 1)) / labels[:, j].sum()
            if recall >= target:
                best = max(best, np.sum(chosen & (labels[:, j] == 1)) / chosen.sum())
        hits = np.sum(decided[:, j] & labels[:, j])
        assert hits / labels[:, j].sum() >= target
        assert hits / decided[:, j].sum() == pytest.approx(best)
    trainer = Trainer(model=lambda: keras.Sequential([keras.Input((LABELS,)), keras.layers.Identity()]),
                      task=MultiLabelTask(label_names=["a", "b", "c"]))
    trainer.operating_point = thresholds  # as the README's example serves them
    np.testing.assert_array_equal(trainer.predict_classes(logits.astype(np.float32)), decided)
    again = LabelThresholds.from_dict(thresholds.to_dict())
    np.testing.assert_array_equal(again.decide(logits), decided)
    np.testing.assert_array_equal(thresholds.decide_tensor(tf.constant(logits, tf.float32)).numpy(), decided)
    assert precision_recall_curve(logits[:, 0], labels[:, 0] == 1).positives == labels[:, 0].sum()
    with pytest.raises(ArgumentError) as caught:
        choose_label_thresholds(logits, labels, {"d": 0.9}, label_names=["a", "b", "c"])
    assert caught.value.argument == "target_recalls"


def test_bad_labels_and_settings_name_their_argument():
    features, labels = _data()
    with pytest.raises(ArgumentError) as caught:
        Trainer(model=_mlp, task=MultiLabelTask(), num_classes=LABELS)
    assert caught.value.argument == "num_classes"
    with pytest.raises(ArgumentError) as caught:
        Trainer(model=_mlp, task=MultiLabelTask(label_names=["a", "b"]))
    assert caught.value.argument == "label_names"
    trainer = Trainer(model=_mlp, task=MultiLabelTask())
    with pytest.raises(ArgumentError, match=r"multi-hot \[batch, 3\]") as caught:
        trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels[:, :2])).batch(8), epochs=1)
    assert caught.value.argument == "labels"
    for bad in (labels * 2, labels * 0.5):  # 0.5 is refused, not truncated to 0
        with pytest.raises(tf.errors.InvalidArgumentError, match="must be 0 or 1"):
            trainer.fit(tf.data.Dataset.from_tensor_slices((features, bad)).batch(8), epochs=1)
    with pytest.raises(ArgumentError):
        MultiLabelTask.class_counts(labels * 2)


def test_the_export_serves_per_label_probabilities_and_threshold_decisions_in_a_fresh_process(tmp_path):
    import json

    from tests.cli_processes import serve_in_fresh_process
    from trainer.export import export_saved_model

    features, labels = _data(n=200, seed=2)
    trainer = Trainer(model=_mlp, optimizer=keras.optimizers.Adam(0.05), task=MultiLabelTask())
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(50), epochs=5)
    logits, held = trainer.collect_logits(tf.data.Dataset.from_tensor_slices((features, labels)).batch(50))
    thresholds = choose_label_thresholds(logits, held, [None, 0.9, 0.9], label_names=["a", "b", "c"])
    export_saved_model(trainer.model, str(tmp_path / "export"), input_shape=[FEATURES],
                       class_names=["a", "b", "c"], operating_point=thresholds, multi_label=True)
    out = serve_in_fresh_process(tmp_path / "export", features[:20], tmp_path)
    raw = np.asarray(trainer.model(features[:20]))
    np.testing.assert_allclose(out["probabilities"], 1 / (1 + np.exp(-raw)), rtol=1e-5, atol=1e-6)
    decided = thresholds.decide(raw)
    np.testing.assert_array_equal(out["decisions"], decided)
    assert out["labels"].tolist() == [";".join(n for n, d in zip("abc", row) if d) for row in decided]
    metadata = json.loads((tmp_path / "export" / "assets.extra" / "metadata.json").read_text())
    assert metadata["head"] == "multi_label"
    assert LabelThresholds.from_dict(metadata["operating_point"]).label_names == ("a", "b", "c")
