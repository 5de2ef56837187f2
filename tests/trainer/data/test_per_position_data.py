"""Labels per position (`trainer.data.load_per_position_data`): counts, whole-example splits, errors.

Oracles: NumPy's counts of the written masks (ignored positions left out); every example in one
split; the model built for the data returns logits at every position.
"""

import numpy as np
import pytest

from trainer.data import InputDataError, load_per_position_data
from trainer.models import build_model


def masks(n=120, size=12, seed=0, ignore=255):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size)).astype(np.float32)
    y = np.zeros((n, size, size), np.int64)
    y[x > 0.8] = 1
    y[x > 2.0] = 2
    if ignore is not None:
        y[:, 0, :] = ignore
    return x, y


def rows(split):
    xs, ys = [], []
    for batch in split.dataset(64, shuffle=False, seed=0):
        xs.append(batch[0].numpy())
        ys.append(batch[1].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_counts_count_positions_and_splits_keep_whole_examples(tmp_path):
    x, y = masks()
    np.savez(tmp_path / "m.npz", x=x, y=y)
    bundle = load_per_position_data(f"npz:{tmp_path / 'm.npz'}", ignore_label=255, seed=1)
    assert bundle.label_shape == (12, 12) and bundle.ignore_label == 255 and bundle.num_classes == 3
    splits = (bundle.train, bundle.validation, bundle.eval)
    assert sum(s.num_examples for s in splits) == len(y)
    seen = []
    for split in splits:
        features, labels = rows(split)
        assert features.shape[1:] == (12, 12, 1) and labels.shape[1:] == (12, 12)
        counted = labels[labels != 255]
        np.testing.assert_array_equal(split.class_counts, np.bincount(counted, minlength=3))
        seen.append(features[:, 0, 0, 0])
    # Every example once: the split features' first pixels are the file's, as a multiset.
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(x[:, 0, 0]))
    total = sum(s.class_counts for s in splits)
    np.testing.assert_array_equal(total, np.bincount(y[y != 255], minlength=3))
    # The FCN keeps the positions: logits [batch, 12, 12, 3].
    model = build_model("fcn", bundle.train.input_shape, 3)
    assert model(rows(bundle.eval)[0][:2]).shape == (2, 12, 12, 3)


def test_token_tags(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 20, 4)).astype(np.float32)
    y = (x[..., 0] > 1).astype(np.int64)
    y[:, -3:] = -1  # padding
    np.savez(tmp_path / "t.npz", x=x, y=y)
    bundle = load_per_position_data(f"npz:{tmp_path / 't.npz'}", ignore_label=-1)
    assert bundle.label_shape == (20,) and bundle.train.input_shape == (20, 4)
    assert build_model("fcn", (20, 4), 2)(x[:3]).shape == (3, 20, 2)


@pytest.mark.parametrize("ignore, labels, argument, message", [
    (None, "255", "ignore_label", "ignore_label=255"),   # 255 as a class would make 256 classes
    (None, "-1", "ignore_label", "ignore_label=-1"),
    (1, "255", "ignore_label", "is a class index"),
    (7, "255", None, "negative"),
])
def test_bad_labels_are_named(tmp_path, ignore, labels, argument, message):
    x, y = masks(ignore=None)
    if labels == "255":
        y[:, 0, :] = 255
    if labels == "-1" or ignore == 7:
        y[:, 0, :] = -1
    np.savez(tmp_path / "m.npz", x=x, y=y)
    with pytest.raises(InputDataError, match=message) as caught:
        load_per_position_data(f"npz:{tmp_path / 'm.npz'}", ignore_label=ignore)
    assert caught.value.argument == argument


def test_features_must_cover_the_positions(tmp_path):
    x, y = masks()
    np.savez(tmp_path / "m.npz", x=x[:, :10], y=y)
    with pytest.raises(InputDataError, match=r"\[N, 12, 12, channels\]"):
        load_per_position_data(f"npz:{tmp_path / 'm.npz'}", ignore_label=255)
