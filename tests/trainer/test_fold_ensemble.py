"""`trainer.fold_ensemble`: the fold models' mean logits against NumPy, its export, its errors."""

import numpy as np
import pytest
import tensorflow as tf

from small_models import small_mlp
from trainer import fold_ensemble
from trainer.checks import ArgumentError
from trainer.export import export_saved_model
from trainer.tasks import BinaryTask


def _numpy_logits(model, features):
    w1, b1, w2, b2 = model.get_weights()
    return np.maximum(features @ w1 + b1, 0.0) @ w2 + b2


def _models(count, num_classes=3):
    return [small_mlp(4, num_classes, hidden=6, seed=seed) for seed in range(count)]


def _rows(n=50):
    return np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)


def test_the_ensemble_is_the_mean_of_its_members_logits():
    models, rows = _models(3), _rows()
    ensemble = fold_ensemble.mean_logits_model(models, (4,))
    want = np.mean([_numpy_logits(m, rows) for m in models], axis=0)
    np.testing.assert_allclose(ensemble(rows).numpy(), want, rtol=1e-5, atol=1e-6)
    labels = np.arange(len(rows)) % 3
    data = tf.data.Dataset.from_tensor_slices((rows, labels)).batch(16)
    logits, got_labels = fold_ensemble.ensemble_logits(ensemble, data)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)
    assert ensemble.output_shape == (None, 3)


def test_a_one_logit_ensemble_gives_the_two_class_logits_of_the_mean_logit():
    models, rows = _models(2, num_classes=1), _rows()
    ensemble = fold_ensemble.mean_logits_model(models, (4,))
    data = tf.data.Dataset.from_tensor_slices((rows, np.zeros(len(rows), np.int64))).batch(16)
    logits, _ = fold_ensemble.ensemble_logits(ensemble, data, decision_logits=BinaryTask().decision_logits)
    z = np.mean([_numpy_logits(m, rows) for m in models], axis=0)[:, 0]
    np.testing.assert_allclose(logits, np.stack([np.zeros_like(z), z], axis=1), rtol=1e-5, atol=1e-6)


def test_the_exported_ensemble_serves_the_mean_logits(tmp_path):
    models, rows = _models(3), _rows()
    ensemble = fold_ensemble.mean_logits_model(models, (4,))
    export_saved_model(ensemble, str(tmp_path / "export"), input_shape=(4,), class_names=["a", "b", "c"])
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    out = serve(features=tf.constant(rows))
    want = np.mean([_numpy_logits(m, rows) for m in models], axis=0)
    np.testing.assert_allclose(out["logits"].numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["class_id"].numpy(), want.argmax(axis=1))


def test_bad_members_are_refused_naming_models():
    with pytest.raises(ArgumentError, match="two or more") as caught:
        fold_ensemble.mean_logits_model(_models(1), (4,))
    assert caught.value.argument == "models"
    with pytest.raises(ArgumentError, match="same shape"):
        fold_ensemble.mean_logits_model([small_mlp(4, 3, hidden=2), small_mlp(4, 2, hidden=2)], (4,))
