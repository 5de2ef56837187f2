"""CSV tables as practitioners have them: string categories, missing cells, ID and weight columns.

Oracles: NumPy recomputations of the schema's statistics and of the encoded inputs from the
file's cells, and the exported SavedModel's named-column signature against the pipeline.
"""

import csv
import warnings

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import ColumnOptions, DataWarning, InputDataError, TabularSchema, load_data
from trainer.data.encoding import FeatureEncoder, parse_cells
from trainer.export import FEATURES_SIGNATURE, export_saved_model, load_serving_function
from trainer.models import build_mlp

MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}


def _write_table(path, n=300, seed=0):
    """A table: id, age (numeric, missing cells), country (strings, missing), w, label."""
    rng = np.random.default_rng(seed)
    countries = np.array(["FR", "DE", "IT", "ES"])
    rows = []
    for i in range(n):
        country = countries[rng.choice(4, p=[0.5, 0.3, 0.15, 0.05])]
        age = f"{rng.normal(40, 10):.3f}"
        if i % 17 == 0:
            age = ["", "NA", "nan", " ? "][i % 4]
        if i % 23 == 0:
            country = ""
        label = "fraud" if (country == "ES" or rng.random() < 0.1) else "ok"
        rows.append([str(1000 + i), age, country, f"{rng.uniform(0.5, 2):.3f}", label])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["customer_id", "age", "country", "w", "label"])
        writer.writerows(rows)
    return rows


def _load_all(path, **options):
    """Every row trains (the eval data is the same file), so the oracle sees the training rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_data(f"csv:{path}", eval_dataset=f"csv:{path}", columns=ColumnOptions(**options))


def test_the_schema_is_what_numpy_finds_in_the_cells(tmp_path):
    path = tmp_path / "t.csv"
    rows = _write_table(path)
    bundle = _load_all(path, exclude_columns=("customer_id",), weight_column="w")
    schema = bundle.schema
    assert schema.feature_names == ["age", "country"]
    assert schema.excluded() == ["customer_id"]
    age, country = schema.columns
    ages = [r[1] for r in rows]
    observed = np.array([float(a) for a in ages if a.strip().lower() not in MISSING])
    assert age.kind == "numeric" and age.missing == len(ages) - len(observed)
    np.testing.assert_allclose(age.mean, observed.mean(), rtol=1e-9)
    np.testing.assert_allclose(age.variance, observed.var(), rtol=1e-6)
    values, counts = np.unique([r[2] for r in rows], return_counts=True)
    expected = [v for _, v in sorted(zip(-counts, values))]
    assert country.kind == "categorical" and list(country.vocabulary) == expected
    assert "" in country.vocabulary  # missing cells are a category of their own
    assert schema.width == 2 + len(expected) + 1
    assert bundle.train.input_shape == (schema.width,)
    assert TabularSchema.from_json(schema.to_json()) == schema


def test_the_encoded_inputs_equal_a_numpy_encoding(tmp_path):
    path = tmp_path / "t.csv"
    rows = _write_table(path)
    bundle = _load_all(path, exclude_columns=("customer_id",), weight_column="w")
    batches = list(bundle.eval.dataset(64, shuffle=False, seed=0))
    x = np.concatenate([b[0].numpy() for b in batches])
    age, country = bundle.schema.columns
    expected = np.zeros((len(rows), bundle.schema.width), np.float32)
    for i, r in enumerate(rows):
        missing = r[1].strip().lower() in MISSING
        expected[i, 0] = age.mean if missing else float(r[1])
        expected[i, 1] = float(missing)
        expected[i, 2 + 1 + list(country.vocabulary).index(r[2])] = 1.0
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, [bundle.class_names.index(r[4]) for r in rows])


def test_the_weight_column_is_never_a_feature_and_rides_with_its_row(tmp_path):
    path = tmp_path / "t.csv"
    rows = _write_table(path)
    bundle = _load_all(path, weight_column="w")
    assert "w" not in bundle.schema.feature_names
    assert "customer_id" in bundle.schema.feature_names
    batches = list(bundle.train.dataset(50, shuffle=True, seed=3))
    assert all(len(b) == 3 for b in batches)
    by_id = {float(r[0]): float(r[3]) for r in rows}
    ids = np.concatenate([b[0].numpy()[:, 0] for b in batches])
    weights = np.concatenate([b[2].numpy() for b in batches])
    assert sorted(ids) == sorted(by_id)
    np.testing.assert_allclose(weights, [by_id[i] for i in ids], rtol=1e-6)


def test_an_identifier_column_is_named_in_a_warning(tmp_path):
    path = tmp_path / "t.csv"
    _write_table(path)
    with pytest.warns(DataWarning, match="'customer_id' looks like an identifier.*exclude_columns"):
        load_data(f"csv:{path}")


def test_a_few_words_in_a_numeric_column_are_named_in_a_warning(tmp_path):
    path = tmp_path / "t.csv"
    lines = ["a,label"] + [f"{i}.5,{i % 2}" for i in range(60)] + ["unknown,1"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(DataWarning, match="'a' is read as categorical.*'unknown'.*missing_values"):
        load_data(f"csv:{path}", eval_dataset=f"csv:{path}")
    bundle = _load_all(path, missing_values=("", "unknown"))
    assert bundle.schema.columns[0].kind == "numeric" and bundle.schema.columns[0].missing == 1


def test_categorical_columns_force_integer_codes_and_rare_values_share_other(tmp_path):
    path = tmp_path / "t.csv"
    lines = ["code,x,label"] + [f"{i % 3},{i},{i % 2}" for i in range(30)] + ["7,1,0"]
    path.write_text("\n".join(lines) + "\n")
    bundle = _load_all(path, categorical_columns=("code",), min_category_count=2)
    code = bundle.schema.columns[0]
    assert code.kind == "categorical" and sorted(code.vocabulary) == ["0", "1", "2"]
    assert code.other == 1  # '7' appears once: below the minimum count, it is 'other'


def test_bad_column_choices_name_every_offending_column(tmp_path):
    path = tmp_path / "t.csv"
    _write_table(path)
    with pytest.raises(InputDataError, match=r"^exclude_columns: 'nope', 'gone' are not columns") as e:
        _load_all(path, exclude_columns=("nope", "gone"))
    assert e.value.argument == "exclude_columns"
    with pytest.raises(InputDataError, match=r"^weight_column: 'wt' is not a column"):
        _load_all(path, weight_column="wt")
    with pytest.raises(InputDataError, match=r"^feature_columns: 'label' is the label"):
        _load_all(path, feature_columns=("age", "label"))
    with pytest.raises(InputDataError,
                       match=r"(?s)^max_vocabulary=3: .*'country' has more than 3 distinct values in the "
                             r"training rows: an identifier or free text"):
        _load_all(path, max_vocabulary=3, exclude_columns=("customer_id",))


def test_a_bad_weight_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,w,label\n1,1,0\n2,-1,1\n3,1,0\n")
    with pytest.raises(InputDataError, match=r"^weight_column.*row 2.*column 'w', value '-1'"):
        _load_all(path, weight_column="w")


def test_an_eval_file_must_have_the_training_columns(tmp_path):
    train, other = tmp_path / "train.csv", tmp_path / "eval.csv"
    _write_table(train)
    other.write_text("age,label\n3,ok\n")
    with pytest.raises(InputDataError, match="lacks the feature column 'country'"):
        load_data(f"csv:{train}", eval_dataset=f"csv:{other}",
                  columns=ColumnOptions(exclude_columns=("customer_id",), weight_column="w"))
    other.write_text("country,age,label\nFR,old,ok\n")
    with pytest.raises(InputDataError, match="'age' is numeric in the training data.*'old'"):
        load_data(f"csv:{train}", eval_dataset=f"csv:{other}",
                  columns=ColumnOptions(exclude_columns=("customer_id",), weight_column="w"))


def test_the_export_takes_named_raw_columns_and_agrees_with_the_pipeline(tmp_path):
    path = tmp_path / "t.csv"
    rows = _write_table(path)
    bundle = _load_all(path, exclude_columns=("customer_id",), weight_column="w")
    model = build_mlp(bundle.train.input_shape, bundle.num_classes, hidden_units=(8,),
                      feature_mean=bundle.feature_mean, feature_variance=bundle.feature_variance)
    export_dir = str(tmp_path / "export")
    export_saved_model(model, export_dir, input_shape=bundle.train.input_shape,
                       class_names=bundle.class_names, schema=bundle.schema)
    serve, metadata = load_serving_function(export_dir)
    assert [f["column"] for f in metadata["features"]] == ["age", "country"]
    assert [f["dtype"] for f in metadata["features"]] == ["float32", "string"]
    typed = parse_cells(bundle.schema, {"age": tf.constant([r[1] for r in rows]),
                                        "country": tf.constant([r[2] for r in rows])})
    raw = serve(**typed)
    features, _ = load_serving_function(export_dir, FEATURES_SIGNATURE)
    x = np.concatenate([b[0].numpy() for b in bundle.eval.dataset(64, shuffle=False, seed=0)])
    encoded = features(features=tf.constant(x))
    np.testing.assert_allclose(raw["probabilities"].numpy(), encoded["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(raw["class_id"].numpy(), encoded["class_id"].numpy())
    np.testing.assert_allclose(FeatureEncoder(bundle.schema)(typed).numpy(), x, rtol=1e-6)


def test_a_heavy_tailed_column_is_log_scaled_and_a_normal_one_is_not(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    amount, score = rng.lognormal(3, 1.5, n), rng.normal(0, 1, n)
    path = tmp_path / "t.csv"
    path.write_text("amount,score,label\n" + "".join(
        f"{a:.6f},{s:.6f},{i % 2}\n" for i, (a, s) in enumerate(zip(amount, score))))
    bundle = _load_all(path)
    amount_column, score_column = bundle.schema.columns
    assert amount_column.transform == "signed_log1p" and score_column.transform is None
    logged = np.log1p(np.round(amount, 6))
    np.testing.assert_allclose(amount_column.mean, logged.mean(), rtol=1e-6)
    np.testing.assert_allclose(amount_column.variance, logged.var(), rtol=1e-5)
    x = np.concatenate([b[0].numpy() for b in bundle.eval.dataset(256, shuffle=False, seed=0)])
    np.testing.assert_allclose(x[:, 0], logged, rtol=1e-5)
