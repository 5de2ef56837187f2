"""Tests of the compiled loop: tracing, gradient reweighting, distribution, resume, summaries."""


import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from losses.rules import ClassWeights, TargetClassWeight, TrainingContext
from small_models import batched, small_mlp
from trainer import Trainer
from trainer.distribute import new_mirrored_strategy

NUM_CLASSES = 3
NUM_FEATURES = 8


def make_data(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype(np.int32)
    return features, labels


def make_dataset(features, labels, batch_size=32):
    return batched(features, labels, batch_size)


def make_model(seed=0):
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=16, seed=seed)


def test_train_function_traced_at_most_twice_over_epochs():
    features, labels = make_data(100)  # 100 / 32 -> 4 batches, the last partial.
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=3)
    history = trainer.fit(make_dataset(features, labels), epochs=4)
    assert len(history["loss"]) == 4
    assert trainer._train_loop_fn.experimental_get_tracing_count() <= 2
    assert int(trainer.global_step.numpy()) == 16


def _sgd_step_weights(trainer_kwargs, features, labels):
    trainer = Trainer(model=make_model, optimizer=keras.optimizers.SGD(0.1),
                      num_classes=NUM_CLASSES, **trainer_kwargs)
    trainer.fit(make_dataset(features, labels, batch_size=len(labels)), epochs=1)
    return [v.numpy() for v in trainer.model.trainable_variables]


def test_class_weights_equal_weighting_the_per_example_losses():
    features, labels = make_data(64)
    weights = np.array([0.5, 2.0, 7.0], np.float32)
    got = _sgd_step_weights({"reweighting": ClassWeights(weights)}, features, labels)

    model = make_model()
    with tf.GradientTape() as tape:
        per_example = keras.losses.sparse_categorical_crossentropy(labels, model(features), from_logits=True)
        loss = tf.reduce_sum(per_example * tf.gather(weights, labels)) / len(labels)
    gradients = tape.gradient(loss, model.trainable_variables)
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(model.trainable_variables, gradients)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def test_target_class_weight_scales_only_the_target_class_rows():
    rule = TargetClassWeight(target_class=2, weight=4.0)
    rule.build(NUM_CLASSES)
    labels = tf.constant([0, 2, 1, 2])
    gradients = tf.random.normal([4, NUM_CLASSES], seed=1)
    context = TrainingContext(epoch=tf.constant(0, tf.int64), step=tf.constant(0, tf.int64))
    out = rule(labels, tf.zeros([4, NUM_CLASSES]), gradients, context).numpy()
    np.testing.assert_allclose(out[[0, 2]], gradients.numpy()[[0, 2]])
    np.testing.assert_allclose(out[[1, 3]], 4.0 * gradients.numpy()[[1, 3]])


def test_target_class_weight_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"target_class .*got 5"):
        Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=TargetClassWeight(5, 2.0))


@pytest.mark.parametrize("weights, message", [
    ([1.0, 2.0], "2 values but there are 3 classes"),
    ([1.0, -1.0, 1.0], "non-negative"),
    ([0.0, 0.0, 0.0], "all zero"),
])
def test_bad_class_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=ClassWeights(weights))


def test_model_output_width_must_equal_num_classes():
    with pytest.raises(ValueError, match="num_classes must equal the model's 3 logits per example.*got 4"):
        Trainer(model=make_model, num_classes=4)


def test_labels_out_of_range_fail_with_a_clear_message():
    features, labels = make_data(32)
    labels[3] = NUM_CLASSES + 2
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes=3"):
        trainer.fit(make_dataset(features, labels), epochs=1)


def test_empty_dataset_is_rejected():
    features, labels = make_data(32)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="train_data is empty"):
        trainer.fit(make_dataset(features, labels).take(0), epochs=1)


def test_mirrored_strategy_matches_default_with_adam():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest must split the CPU into two logical devices"
    features, labels = make_data(128)
    dataset = make_dataset(features, labels, batch_size=32)
    rule_weights = [1.0, 3.0, 0.5]

    def train(strategy):
        trainer = Trainer(model=make_model, optimizer=lambda: keras.optimizers.Adam(0.01),
                          num_classes=NUM_CLASSES, strategy=strategy, steps_per_loop=2,
                          reweighting=ClassWeights(rule_weights))
        trainer.fit(dataset, epochs=3)
        return [v.numpy() for v in trainer.model.trainable_variables], trainer

    default_weights, _ = train(tf.distribute.get_strategy())
    mirrored = new_mirrored_strategy([d.name for d in devices[:2]])
    mirrored_weights, mirrored_trainer = train(mirrored)
    assert mirrored_trainer.strategy.num_replicas_in_sync == 2
    for d, m in zip(default_weights, mirrored_weights):
        np.testing.assert_allclose(m, d, rtol=1e-5, atol=1e-6)


def test_resume_continues_from_the_latest_checkpoint(tmp_path):
    features, labels = make_data(96)
    dataset = make_dataset(features, labels)

    def trainer_for(directory):
        return Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=2,
                       model_dir=str(directory), reweighting=ClassWeights([1.0, 2.0, 3.0]))

    uninterrupted = trainer_for(tmp_path / "straight")
    uninterrupted.fit(dataset, epochs=4)

    first = trainer_for(tmp_path / "resumed")
    first.fit(dataset, epochs=2)
    second = trainer_for(tmp_path / "resumed")
    history = second.fit(dataset, total_epochs=4)
    assert len(history["loss"]) == 2, "the resumed run trains only the remaining epochs"
    assert int(second.epoch.numpy()) == 4
    assert int(second.global_step.numpy()) == int(uninterrupted.global_step.numpy()) == 12
    for a, b in zip(uninterrupted.model.trainable_variables, second.model.trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    # Optimizer state came back too: Adam's iteration counter matches.
    assert int(second.optimizer.iterations.numpy()) == 12


def test_fit_epochs_means_more_epochs_as_in_keras(tmp_path, caplog):
    features, labels = make_data(96)
    dataset = make_dataset(features, labels)
    once = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=2)
    once.fit(dataset, epochs=4)
    twice = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=2,
                    model_dir=str(tmp_path))
    first = twice.fit(dataset, epochs=2)
    second = twice.fit(dataset, epochs=2)  # two more, as a second model.fit(epochs=2) trains
    assert len(first["loss"]) == len(second["loss"]) == 2
    assert int(twice.epoch.numpy()) == 4 and int(twice.global_step.numpy()) == 12
    for a, b in zip(once.model.trainable_variables, twice.model.trainable_variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    # A total already reached trains nothing, and says so.
    with caplog.at_level("WARNING"):
        assert twice.fit(dataset, total_epochs=3) == {}
    assert int(twice.global_step.numpy()) == 12
    assert any("Nothing to train" in record.getMessage() for record in caplog.records)
    with pytest.raises(ValueError, match="exactly one of epochs"):
        twice.fit(dataset, epochs=1, total_epochs=5)


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
    features, labels = make_data(64)
    Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path)).fit(
        make_dataset(features, labels), epochs=1)

    def wider_model():
        return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(NUM_CLASSES)])

    trainer = Trainer(model=wider_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="does not match this run") as caught:
        trainer.fit(make_dataset(features, labels), epochs=2)
    # It names the object that differs and how, in full (not TF's first line).
    message = str(caught.value)
    assert "'model' differs" in message
    assert "[8, 16] in the checkpoint, [8, 32] in this run" in message


def _scalars(directory):
    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue  # e.g. the run's description (text)
        values[tag] = [(event.step, float(tf.make_ndarray(event.tensor_proto)))
                       for event in accumulator.Tensors(tag)]
    return values


def test_tensorboard_scalars_are_written_for_train_and_eval(tmp_path):
    features, labels = make_data(96)
    dataset = make_dataset(features, labels)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=2,
                      model_dir=str(tmp_path), reweighting=ClassWeights([1.0, 2.0, 3.0]))
    history = trainer.fit(dataset, epochs=2, validation_data=dataset)
    train = _scalars(tmp_path / "train")
    evaluation = _scalars(tmp_path / "eval")
    for tag in ("overall/loss", "overall/learning_rate", "recall/0", "recall/2", "overall/balanced_accuracy",
                "class_weight/2"):
        assert [step for step, _ in train[tag]] == [3, 6], tag
    assert train["class_weight/2"][0][1] == pytest.approx(3.0)
    assert train["overall/learning_rate"][0][1] == pytest.approx(1e-3)
    assert train["overall/loss"][1][1] == pytest.approx(history["loss"][1], rel=1e-6)
    for tag in ("overall/loss", "recall/1", "overall/balanced_accuracy"):
        assert [step for step, _ in evaluation[tag]] == [3, 6], tag
    expected = history["val_balanced_accuracy"][1]
    assert evaluation["overall/balanced_accuracy"][1][1] == pytest.approx(expected, rel=1e-6)
    assert "class_weight/0" not in evaluation


def test_evaluate_and_predict_agree():
    features, labels = make_data(80)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES)
    trainer.fit(make_dataset(features, labels), epochs=2)
    result = trainer.evaluate(make_dataset(features, labels))
    probabilities = trainer.predict(features)
    assert probabilities.shape == (80, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = probabilities.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    for k in range(NUM_CLASSES):
        expected_recall = np.mean(predicted[labels == k] == k)
        assert result[f"recall/{k}"] == pytest.approx(expected_recall)
    assert int(result["confusion_matrix"].sum()) == 80


def test_repeated_data_train_exactly_as_one_pass():
    # Infinite (repeated) data take the next()-based loop, finite data the
    # optional-based one: the same batches must give the same training.
    features, labels = make_data(96)  # 3 batches of 32; steps_per_loop=2 -> loops of 2 and 1
    runs = []
    for data, steps_per_epoch in ((make_dataset(features, labels), None),
                                  (make_dataset(features, labels).repeat(), 3)):
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=2,
                          reweighting=ClassWeights([1.0, 2.0, 3.0]))
        history = trainer.fit(data, epochs=2, steps_per_epoch=steps_per_epoch)
        assert int(trainer.global_step.numpy()) == 6
        assert trainer._train_loop_fn.experimental_get_tracing_count() == 1
        runs.append((history["loss"], trainer.train_confusion.result().numpy(),
                     [v.numpy() for v in trainer.model.trainable_variables]))
    (loss_a, matrix_a, weights_a), (loss_b, matrix_b, weights_b) = runs
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    np.testing.assert_array_equal(matrix_a, matrix_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _regularised_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((NUM_FEATURES,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L1(0.01),
                           activity_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dense(NUM_CLASSES, kernel_regularizer=keras.regularizers.L2(0.5))])


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_regularisation_losses_count_once_as_in_keras_fit(strategy_name, mirrored):
    features, labels = make_data(64)
    strategy = mirrored if strategy_name == "mirrored" else tf.distribute.get_strategy()
    with strategy.scope():
        trainer = Trainer(model=_regularised_model, num_classes=NUM_CLASSES, strategy=strategy,
                          optimizer=lambda: keras.optimizers.SGD(0.1), steps_per_loop=2)
    trainer.fit(make_dataset(features, labels, batch_size=32), epochs=1)

    def keras_fit(model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(features, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)
        return model

    reference = keras_fit(_regularised_model())
    unregularised = keras_fit(make_model_like(_regularised_model()))
    for ours, expected in zip(trainer.model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(trainer.model.weights[-2].numpy(), unregularised.weights[-2].numpy(),
                           atol=1e-4), "the regularisers changed the step"


def make_model_like(model):
    """The same architecture and initial weights without regularisers."""
    plain = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(NUM_CLASSES)])
    plain.set_weights(model.get_weights())
    return plain


def test_mixed_precision_model_trains():
    features, labels = make_data(96)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, steps_per_loop=3)
        before = [w.numpy().copy() for w in trainer.model.trainable_weights]
        history = trainer.fit(make_dataset(features, labels), epochs=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert trainer.model.layers[0].compute_dtype == "float16"
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, trainer.model.trainable_weights))


def test_sample_weights_equal_keras_fit_sample_weight(mirrored):
    features, labels = make_data(64)
    weights = np.random.default_rng(3).uniform(0.0, 3.0, size=64).astype(np.float32)
    class_weights = [1.0, 2.0, 4.0]
    weighted = tf.data.Dataset.from_tensor_slices((features, labels, weights)).batch(16)
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, strategy=strategy,
                              optimizer=lambda: keras.optimizers.SGD(0.5), steps_per_loop=2,
                              reweighting=ClassWeights(class_weights))
        trainer.fit(weighted, epochs=1)

        reference = make_model()
        reference.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # The rule's class weight multiplies the example's own weight.
        reference.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0,
                      sample_weight=weights * np.asarray(class_weights, np.float32)[labels])
        for ours, expected in zip(trainer.model.weights, reference.weights):
            np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
        keras_loss = reference.evaluate(features, labels, sample_weight=weights, batch_size=16,
                                        verbose=0)
        for collect in (False, True):
            result = trainer.evaluation(weighted, collect_logits=collect)
            assert result.loss == pytest.approx(keras_loss, rel=1e-5), collect
