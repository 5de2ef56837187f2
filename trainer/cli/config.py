"""The run's configuration: frozen dataclasses read from the flags, with every cross-flag check done once.

`from_flags` reads and checks the flags; `RunConfig.with_data` checks them against the loaded data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from absl import flags

from trainer.checks import (
    ArgumentError,
    check_class_index,
    check_integer,
    check_number,
    check_positive,
    check_positive_integer,
)
from trainer.cli import flag_groups
from trainer.cli.cost_matrix import CostMatrixFile, read_cost_matrix
from trainer.cli.decision_folds import choose_decision_folds, resolve_decision_model
from trainer.cli.errors import UsageError
from trainer.cli.fingerprint import DATA_NAMES
from trainer.data.csv_source import ColumnOptions
from trainer.data.labels import canonical_label, class_index, describe_classes, is_int_label
from trainer.data.schema import DEFAULT_MAX_VOCABULARY, DEFAULT_MIN_CATEGORY_COUNT, DEFAULT_MISSING_VALUES
from trainer.models import DEFAULT_HIDDEN_UNITS, pick_model_name

FLAGS = flags.FLAGS

RECALL_TARGET_MODES = ("target_class", "worst_class")
# `--mixed_precision`: the Keras dtype policies the built-in models are built under.
MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# The per-class metrics `--monitor` may follow as `<metric>/<class>` (`trainer.metrics.flatten_metrics`).
PER_CLASS_METRICS = ("recall", "precision", "f1")

# Config fields a resumed run may change freely: they extend the run (epochs), say where or how it
# runs (the strategy, XLA on the step) or what happens on a fault, or only observe it. Every other
# field is compared with the saved run's.
# `decision_folds` changes only which data chooses the operating point after training, not the
# model (`decision_model` only which trained model serves it); the fold directories refuse a
# cross-fit of other folds themselves (`trainer.cross_fit`).
# `calibrate_probabilities` and `cost_matrix` too: both act after training, on the trained model;
# and `weighted_metrics`, which only says how the final metrics count.
UNCOMPARED = ("epochs", "skip_nonfinite_steps", "jit_compile", "strategy", "num_cpu_devices", "tpu",
              "model_dir", "export_dir", "allow_config_change", "verbosity", "decision_folds",
              "decision_model", "calibrate_probabilities", "cost_matrix", "compare_baseline",
              "confusion_matrix_every", "weighted_metrics")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data the run reads and how (the flags of `trainer.cli.flag_groups.data`)."""

    dataset: str
    eval_dataset: Optional[str]
    validation_split: float
    test_split: float
    label_column: str
    feature_key: str
    label_key: str
    imbalance_ratio: float
    data_dir: Optional[str]
    num_classes: Optional[int]
    feature_columns: Optional[Tuple[str, ...]] = None
    exclude_columns: Tuple[str, ...] = ()
    categorical_columns: Tuple[str, ...] = ()
    weight_column: Optional[str] = None
    missing: str = "impute"
    missing_values: Optional[Tuple[str, ...]] = None
    max_vocabulary: int = DEFAULT_MAX_VOCABULARY
    min_category_count: int = DEFAULT_MIN_CATEGORY_COUNT
    class_names: Optional[Tuple[str, ...]] = None
    channels_first: Optional[bool] = None
    weight_key: Optional[str] = None
    weighted_metrics: bool = False
    label_columns: Optional[Tuple[str, ...]] = None
    ignore_label: Optional[int] = None

    @property
    def multi_label(self) -> bool:
        """Whether the run trains several yes/no labels (`--label_columns`)."""
        return self.label_columns is not None

    def column_options(self) -> ColumnOptions:
        """How a CSV file's columns are chosen and read (`trainer.data.ColumnOptions`)."""
        missing_values = DEFAULT_MISSING_VALUES if self.missing_values is None else (
            ("",) + tuple(self.missing_values))
        return ColumnOptions(
            feature_columns=None if self.feature_columns is None else tuple(self.feature_columns),
            exclude_columns=tuple(self.exclude_columns or ()),
            categorical_columns=tuple(self.categorical_columns or ()),
            weight_column=self.weight_column or None, missing_values=tuple(missing_values),
            max_vocabulary=self.max_vocabulary, min_category_count=self.min_category_count,
            missing=self.missing)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture (`trainer.cli.flag_groups.model`).

    Attributes:
      model: None until `RunConfig.with_data` picks one.
      hidden_units: The MLP's hidden widths; None when not given, until `with_data`
        resolves an MLP's to `DEFAULT_HIDDEN_UNITS` (a CNN refuses a given value).
      dropout: Dropout rate after each hidden layer.
      binary_head: Two classes: `softmax` (two logits) or `sigmoid` (one logit,
        `trainer.tasks.BinaryTask`).
    """

    model: Optional[str]
    hidden_units: Optional[Tuple[int, ...]] = None
    dropout: float = 0.0
    binary_head: str = "softmax"

    @property
    def one_logit(self) -> bool:
        """Whether the model ends in one logit (`--binary_head=sigmoid`)."""
        return self.binary_head == "sigmoid"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The per-example loss and the reweighting rule (`trainer.cli.flag_groups.loss`)."""

    loss: str
    reweighting: str
    class_weights: Optional[Tuple[float, ...]]
    target_weight: float
    beta: float
    gamma: float
    tau: float
    ldam_scale: float
    drw_start_epoch: int
    drw_rule: str
    asl_gamma_pos: float = 0.0
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05


@dataclasses.dataclass(frozen=True)
class RecallConfig:
    """Recall targets, recall callbacks and calibration (`trainer.cli.flag_groups.recall`).

    `calibrate` is resolved: its default (on with a target recall, or with the
    worst-class controller) is already applied. `decision_folds` is None
    (automatic) until `RunConfig.with_data` resolves it to 0 (the held-out
    split chooses the operating point) or K >= 2 (out-of-fold logits of
    every training row do; `choose_decision_folds`), and `decision_model` (None:
    automatic) to the model that serves the point ('ensemble' or 'refit';
    `resolve_decision_model`). `target_class` is an index, or
    a class name until `RunConfig.with_class_names` resolves it. Several recall
    targets (`--target_class=3,4 --target_recall=0.9,0.8`): both are tuples of
    the same length (one target: a value each, as before).
    """

    target_class: Optional[Union[int, str, Tuple[Union[int, str], ...]]]
    target_recall: Optional[Union[float, Tuple[float, ...]]]
    recall_target_mode: str
    recall_target_adjust: Optional[str]
    recall_target_step_size: Optional[float]
    monitor: Optional[str]
    early_stopping_patience: Optional[int]
    stop_at_recall: Optional[float]
    reduce_lr_patience: Optional[int]
    reduce_lr_factor: float
    calibrate: bool
    max_balanced_accuracy_drop: float
    decision_folds: Optional[int] = None
    decision_model: Optional[str] = None
    decision_confidence: float = 0.5
    decision_estimator: str = "harrell_davis"
    calibrate_probabilities: bool = True
    cost_matrix: Optional[CostMatrixFile] = None

    @property
    def several_targets(self) -> bool:
        """Whether several target classes or recalls were given (comma lists)."""
        return isinstance(self.target_class, tuple) or isinstance(self.target_recall, tuple)

    @property
    def single_target_class(self) -> Optional[Union[int, str]]:
        """The one class the progress line and TensorBoard single out: `target_class`, None with several."""
        return None if isinstance(self.target_class, tuple) else self.target_class

    @property
    def targets(self) -> Tuple[Tuple[Union[int, str], float], ...]:
        """`(class, recall)` of each recall target, in the order given (none without both flags)."""
        if self.target_class is None or self.target_recall is None:
            return ()
        classes = self.target_class if isinstance(self.target_class, tuple) else (self.target_class,)
        recalls = self.target_recall if isinstance(self.target_recall, tuple) else (self.target_recall,)
        return tuple(zip(classes, recalls))

    @property
    def cross_fits(self) -> bool:
        """Whether the operating point is chosen on out-of-fold logits (`decision_folds` >= 2)."""
        return self.calibrate and bool(self.decision_folds)

    @property
    def monitor_key(self) -> str:
        """The `val_` log key the recall callbacks follow (default: the target's recall, else the worst).

        With several target classes the default is the smallest recall (no one target's comes first).
        """
        if self.monitor is None:
            single = self.target_class is not None and not isinstance(self.target_class, tuple)
            return f"val_recall/{self.target_class}" if single else "val_min_recall"
        return "val_" + self.monitor

    @property
    def calibration_kind(self) -> Optional[str]:
        """The operating point to choose: `'expected_cost'`, `'target_recall'`, `'multi_target'`,
        `'worst_class'` or None.

        With `cost_matrix`: the class of least expected cost. With `target_class`
        and `target_recall`: the rule that reaches the target recall with the
        best precision (several targets: per-class offsets chosen jointly,
        `'multi_target'`); else, with `recall_target_mode=worst_class`,
        per-class logit offsets that raise the smallest recall.
        """
        if self.cost_matrix is not None:
            return "expected_cost"
        if self.target_recall is not None and self.target_class is not None:
            return "multi_target" if self.several_targets else "target_recall"
        if self.recall_target_mode == "worst_class":
            return "worst_class"
        return None

    @property
    def stops_early(self) -> bool:
        """Whether `RecallEarlyStopping` is on."""
        return self.early_stopping_patience is not None or self.stop_at_recall is not None

    @property
    def reduces_lr(self) -> bool:
        """Whether `RecallReduceLROnPlateau` is on."""
        return self.reduce_lr_patience is not None


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Epochs, batches, optimiser and seeds (`trainer.cli.flag_groups.training`).

    `batch_size` is None until `RunConfig.with_data` chooses it from the training
    rows (`automatic_batch_size`).
    """

    epochs: int
    batch_size: Optional[int]
    learning_rate: float
    steps_per_loop: int
    seed: int
    deterministic: bool
    skip_nonfinite_steps: bool
    jit_compile: str = "auto"
    weight_decay: float = 0.0
    mixed_precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
    """The strategy and its devices (`trainer.cli.flag_groups.distribution`)."""

    strategy: str
    num_cpu_devices: int
    tpu: Optional[str]


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where the run writes, what a resume may change, how much it logs (`flag_groups.outputs`).

    Attributes:
      verbosity: Of the progress line and info logs: 1 unless `--verbosity` is
        given (absl sets it to 0 when absent, so absent and `--verbosity=0`
        look alike by value; given, 0 or lower silences them).
    """

    model_dir: str
    export_dir: Optional[str]
    allow_config_change: Tuple[str, ...]
    verbosity: int
    compare_baseline: Optional[bool] = None
    confusion_matrix_every: int = 0

    @property
    def resolved_export_dir(self) -> Optional[str]:
        """The export directory (default `<model_dir>/export`), None for `--export_dir=none`."""
        export_dir = self.export_dir or os.path.join(self.model_dir, "export")
        return None if export_dir.lower() == "none" else export_dir


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything `python -m trainer.main` was asked to do, checked; one group per flag topic."""

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    recall: RecallConfig
    training: TrainingConfig
    distribution: DistributionConfig
    output: OutputConfig

    def values(self) -> Dict[str, Any]:
        """Every field by its name (which is its flag's name), over all groups."""
        merged: Dict[str, Any] = {}
        for group in dataclasses.fields(self):
            merged.update(dataclasses.asdict(getattr(self, group.name)))
        return merged

    def compared_values(self) -> Dict[str, Any]:
        """The fields a resumed run must keep (all but `UNCOMPARED`), for the run fingerprint."""
        return {name: value for name, value in self.values().items() if name not in UNCOMPARED}

    @property
    def uses_controller(self) -> bool:
        """Whether `--reweighting=recall_target` (the rule and its controller callback) is on."""
        return self.loss.reweighting == "recall_target"

    @property
    def steers_on_held_out_split(self) -> bool:
        """Whether anything reads the held-out split during training: the controller, recall callbacks."""
        recall = self.recall
        return self.uses_controller or recall.stops_early or recall.reduces_lr

    @property
    def needs_held_out_split(self) -> bool:
        """Whether anything learns from the held-out split: controller, calibration, recall callbacks.

        Then the held-out split is also the per-epoch validation data, so every
        callback reads the one evaluation `fit` makes per epoch. A calibration
        on out-of-fold logits (`--decision_folds=K`) does not need it; the
        automatic `--decision_folds` does (it counts the split's examples).
        """
        recall = self.recall
        if recall.decision_folds is None:  # automatic: decided on the held-out split's counts
            calibrates_on_it = recall.calibrate
        else:
            calibrates_on_it = recall.calibrate and recall.decision_folds == 0
        return self.steers_on_held_out_split or calibrates_on_it

    def with_class_names(self, class_names: Sequence[str]) -> "RunConfig":
        """The config with each flag that names a class (`--target_class`, `--monitor`'s
        `recall/<k>`) resolved to a class index of the data (`trainer.data.labels.class_index`).

        Call it once, with the data's class names, before `with_data`. An index stays an
        index and a name is looked up in `class_names`; where a name is also an index (string
        labels that are numbers: classes '2', '5', 'other'), the name wins ('2' is class 0).
        With integer labels the two always agree.

        Raises:
          UsageError: naming the flag and its value, and listing the classes, for a value
            that is neither a class name nor an index of one.
        """
        names = [str(n) for n in class_names]

        def resolve(flag: str, value: Union[int, str], given: Optional[str] = None) -> int:
            k = class_index(value, names)
            if k is None:
                mapping = describe_classes(names) or f"0..{len(names) - 1}"
                raise UsageError(f"{flag}={given or value} does not exist: the data has {len(names)} classes "
                                 f"({mapping}); give a class index or a class name.")
            return k

        recall = self.recall
        target = recall.target_class
        if isinstance(target, tuple) and class_index(",".join(map(str, target)), names) is not None:
            target = ",".join(map(str, target))  # a class name with commas in it (string labels)
        if isinstance(target, tuple):
            target = _resolve_classes(target, names, resolve)
        elif target is not None:
            target = resolve("--target_class", target)
        monitor = recall.monitor
        metric, slash, value = (monitor or "").rpartition("/")
        if slash and metric in PER_CLASS_METRICS:
            monitor = f"{metric}/{resolve('--monitor', value, monitor)}"
        return dataclasses.replace(self, recall=dataclasses.replace(
            recall, target_class=target, monitor=monitor))

    def with_data(self, num_classes: int, input_shape: Tuple[int, ...], has_held_out_split: bool, *,
                  held_out_class_counts: Optional[Sequence[int]] = None,
                  num_train_examples: Optional[int] = None, per_position: bool = False) -> "RunConfig":
        """Checks the flags against the loaded data; returns the config with data defaults resolved.

        `num_classes` and `model` take the data's values when not given;
        `decision_folds` its automatic value (`choose_decision_folds`).

        Args:
          num_classes: Number of classes of the loaded data.
          input_shape: Per-example feature shape.
          has_held_out_split: Whether the data has a held-out split of the training data.
          held_out_class_counts: Examples per class of that split (for the
            automatic `--decision_folds`; without them it is off).
          num_train_examples: Rows the model trains on (for the automatic
            `--batch_size`; without them it is `MAX_AUTOMATIC_BATCH`).
          per_position: Whether the labels are per position (`trainer.data.per_position`): the
            model is then the FCN and the operating point is chosen on the held-out split's
            positions (no cross-fitting).

        Raises:
          UsageError: naming the flag that does not fit the data.
        """
        # Class flags: indices must exist (names were resolved by `with_class_names`).
        self = self.with_class_names([str(c) for c in range(num_classes)])
        weights = self.loss.class_weights
        if weights is not None and len(weights) != num_classes:
            raise UsageError(f"--class_weights has {len(weights)} values but there are {num_classes} "
                             f"classes: give one weight per class.")
        if self.needs_held_out_split and not has_held_out_split:
            raise UsageError(
                "--reweighting=recall_target, --calibrate (without --decision_folds) and the "
                "recall-driven callbacks need a held-out split of the training data, and with "
                "--eval_dataset there is none (the evaluation data must not steer training). Drop "
                "--eval_dataset to hold out --validation_split of --dataset.")
        _check_binary_head_classes(self.model, num_classes)
        if per_position:
            self = _per_position(self)
        folds_choice = choose_decision_folds(self.recall, held_out_class_counts)
        served = resolve_decision_model(self.recall.decision_model, folds_choice)
        return dataclasses.replace(
            self, data=dataclasses.replace(self.data, num_classes=num_classes),
            model=_model_for(self.model, "fcn" if per_position else pick_model_name(input_shape)),
            recall=dataclasses.replace(self.recall, decision_folds=folds_choice.folds,
                                       decision_model=served),
            training=dataclasses.replace(self.training, batch_size=self.training.batch_size or
                                         automatic_batch_size(num_train_examples)))


def _per_position(config: RunConfig) -> RunConfig:
    """Labels per position: refuses a model without logits per position, cross-fitting and a
    one-logit head; the operating point is chosen on the held-out split (`--decision_folds=0`).

    Raises:
      UsageError: naming the flag.
    """
    if config.model.model not in (None, "fcn"):
        raise UsageError(f"--model={config.model.model} returns one prediction per example, and the labels "
                         f"are per position (NPZ 'y' [N, H, W] or [N, T]): use --model=fcn (the default "
                         f"for them), which returns logits at every position.")
    if config.model.one_logit:
        raise UsageError("--binary_head=sigmoid is for one label per example; labels per position train "
                         "a softmax per position: drop --binary_head.")
    if config.recall.decision_folds:
        raise UsageError(f"--decision_folds={config.recall.decision_folds} cross-fits over examples, which "
                         f"is not built for labels per position: the operating point is chosen on the "
                         f"validation split's positions (--decision_folds=0).")
    return dataclasses.replace(config, recall=dataclasses.replace(config.recall, decision_folds=0))


# ------------------------------------------------------------------ reading the flags


def progress_verbosity(flag_values: flags.FlagValues = FLAGS) -> int:
    """`--verbosity` when given on the command line, else 1 (see `OutputConfig.verbosity`)."""
    return flag_values.verbosity if flag_values["verbosity"].present else 1


def project_flag_values(flag_values: flags.FlagValues = FLAGS) -> Dict[str, Any]:
    """Every project flag (of `trainer.cli.flag_groups`) with its value, as metrics.json keeps them."""
    return {flag.name: flag.value for group in flag_groups.GROUPS
            for flag in flag_values.get_flags_for_module(group.__name__)}


def _class_weights(values: Optional[list]) -> Optional[Tuple[float, ...]]:
    if values is None:
        return None
    try:
        return tuple(float(value) for value in values)
    except ValueError as error:
        raise UsageError(f"--class_weights must be comma-separated numbers, got "
                         f"{','.join(values)!r}.") from error


MIN_AUTOMATIC_BATCH, MAX_AUTOMATIC_BATCH = 64, 256
STEPS_PER_EPOCH_AIMED_AT = 64


def automatic_batch_size(num_train_examples: Optional[int]) -> int:
    """The default `--batch_size`: the power of two at or below n / 64, within [64, 256].

    Small tables then still take about 64 optimiser steps per epoch (at 256, a
    1,000-row file takes 4); large data keep 256. Unknown n: 256.
    """
    if not num_train_examples:
        return MAX_AUTOMATIC_BATCH
    aimed = max(1, num_train_examples // STEPS_PER_EPOCH_AIMED_AT)
    power = 1 << (aimed.bit_length() - 1)
    return int(min(MAX_AUTOMATIC_BATCH, max(MIN_AUTOMATIC_BATCH, power)))


def _hidden_units(values: Optional[Sequence[str]], given: bool) -> Optional[Tuple[int, ...]]:
    """`--hidden_units` as widths (None when not given: the model's default).

    Raises:
      ArgumentError: naming `--hidden_units` and every value that is no positive integer.
    """
    if not given or values is None:
        return None
    bad = [v for v in values if not v.strip().isdigit() or int(v) <= 0]
    if bad or not values:
        raise ArgumentError("--hidden_units", ",".join(values),
                            "must be comma-separated positive integers (hidden layer widths), e.g. 256,256")
    return tuple(int(v) for v in values)


def _model_for(model: ModelConfig, picked: str) -> ModelConfig:
    """`model` with its architecture resolved (`picked` when not given).

    Raises:
      UsageError: `--hidden_units` given for a CNN (it has no such layers).
    """
    name = model.model or picked
    if name in ("cnn", "fcn") and model.hidden_units is not None:
        kind = name.upper()
        how = f"--model={name}" if model.model else f"the inputs (the {kind} is picked for them)"
        raise UsageError(f"--hidden_units={_show(model.hidden_units)} sets the MLP's hidden layers, and "
                         f"{how} train a {kind}, which has none: drop --hidden_units"
                         + (", or pass --model=mlp." if name == "cnn" else "."))
    hidden_units = model.hidden_units or (DEFAULT_HIDDEN_UNITS if name == "mlp" else None)
    return dataclasses.replace(model, model=name, hidden_units=hidden_units)


def _class_flag(value: Optional[str]) -> Optional[Union[int, str, Tuple[Union[int, str], ...]]]:
    """A flag naming a class: an index (int) when it is an integer ('2', '2.0'), else the name.

    `--target_class` with commas names several classes: a tuple of those (empty items refused).
    """
    if value is None:
        return None

    def one(text: str) -> Union[int, str]:
        text = text.strip()
        return int(canonical_label(text)) if is_int_label(canonical_label(text)) else text

    if "," not in value:
        return one(value)
    items = value.split(",")
    if any(not item.strip() for item in items):
        raise UsageError(f"--target_class={value} has an empty item: give comma-separated class "
                         f"indices or names, e.g. --target_class=3,4.")
    return tuple(one(item) for item in items)


def _show(value: Any) -> str:
    """A flag value as it was typed: comma lists joined, numbers with %g."""
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _resolve_classes(classes: Tuple[Union[int, str], ...], names: Sequence[str],
                     resolve: Any) -> Tuple[int, ...]:
    """`--target_class`'s classes as indices, each once.

    Raises:
      UsageError: listing every value that is no class (`resolve`'s message for
        one), or the classes named twice.
    """
    unknown = [value for value in classes if class_index(value, names) is None]
    if len(unknown) == 1:
        resolve("--target_class", unknown[0], _show(classes))
    if unknown:
        mapping = describe_classes(names) or f"0..{len(names) - 1}"
        raise UsageError(f"--target_class={_show(classes)}: {', '.join(map(str, unknown))} are not "
                         f"classes of the data ({len(names)} classes: {mapping}); give class indices or "
                         f"names.")
    indices = tuple(resolve("--target_class", value) for value in classes)
    twice = sorted({k for k in indices if indices.count(k) > 1})
    if twice:
        raise UsageError(f"--target_class={_show(classes)} names class(es) {', '.join(map(str, twice))} "
                         f"more than once: give each target class once, with its own --target_recall.")
    return indices


def _default_calibrate(reweighting: str, recall_target_mode: str, target_class: Optional[int],
                       target_recall: Optional[float], cost_matrix: Optional[str] = None) -> bool:
    """On with a cost matrix, a target recall, or when the recall-target controller raises the worst class."""
    return cost_matrix is not None or (target_recall is not None and target_class is not None) or (
        reweighting == "recall_target" and recall_target_mode == "worst_class")


def from_flags(flag_values: flags.FlagValues = FLAGS) -> RunConfig:
    """Reads the parsed flags into a `RunConfig` and checks them, alone and together.

    Raises:
      UsageError: naming the flags that do not fit together.
      ArgumentError: naming the flag and the value out of range.
    """
    f = flag_values
    calibrate = f.calibrate
    if calibrate is None:
        calibrate = _default_calibrate(f.reweighting, f.recall_target_mode, f.target_class,
                                       f.target_recall, f.cost_matrix)
    _check_cost_matrix_combination(f)
    multi_label = f.label_columns is not None
    if multi_label:
        _check_multi_label_flags(f)
    cost_matrix = None if f.cost_matrix is None else read_cost_matrix(f.cost_matrix)
    config = RunConfig(
        data=DataConfig(
            dataset=f.dataset, eval_dataset=f.eval_dataset, validation_split=f.validation_split,
            test_split=f.test_split, label_column=f.label_column, feature_key=f.feature_key,
            label_key=f.label_key,
            imbalance_ratio=f.imbalance_ratio, data_dir=f.data_dir, num_classes=f.num_classes,
            feature_columns=None if f.feature_columns is None else tuple(f.feature_columns),
            exclude_columns=tuple(f.exclude_columns or ()),
            categorical_columns=tuple(f.categorical_columns or ()), weight_column=f.weight_column,
            missing=f.missing,
            missing_values=None if f.missing_values is None else tuple(f.missing_values),
            max_vocabulary=f.max_vocabulary, min_category_count=f.min_category_count,
            class_names=None if f.class_names is None else tuple(f.class_names),
            channels_first=f.channels_first, weight_key=f.weight_key,
            weighted_metrics=bool(f.weighted_metrics),
            label_columns=None if f.label_columns is None else tuple(f.label_columns),
            ignore_label=f.ignore_label),
        model=ModelConfig(model=f.model,
                          hidden_units=_hidden_units(f["hidden_units"].value, f["hidden_units"].present),
                          dropout=f.dropout, binary_head=f.binary_head),
        loss=LossConfig(
            loss="cross_entropy" if multi_label and f.loss == "auto" else resolve_loss(
                f.loss, f.reweighting, f.drw_rule), reweighting=f.reweighting,
            class_weights=_class_weights(f.class_weights),
            target_weight=f.target_weight, beta=f.beta, gamma=f.gamma, tau=f.tau,
            ldam_scale=f.ldam_scale, drw_start_epoch=f.drw_start_epoch, drw_rule=f.drw_rule,
            asl_gamma_pos=f.asl_gamma_pos, asl_gamma_neg=f.asl_gamma_neg, asl_clip=f.asl_clip),
        recall=RecallConfig(
            target_class=_class_flag(f.target_class), target_recall=f.target_recall,
            recall_target_mode=f.recall_target_mode, recall_target_adjust=f.recall_target_adjust,
            recall_target_step_size=f.recall_target_step_size, monitor=f.monitor,
            early_stopping_patience=f.early_stopping_patience, stop_at_recall=f.stop_at_recall,
            reduce_lr_patience=f.reduce_lr_patience, reduce_lr_factor=f.reduce_lr_factor,
            calibrate=bool(calibrate), max_balanced_accuracy_drop=f.max_balanced_accuracy_drop,
            decision_folds=0 if multi_label else f.decision_folds, decision_model=f.decision_model,
            decision_confidence=f.decision_confidence,
            decision_estimator=f.decision_estimator,
            calibrate_probabilities=bool(f.calibrate_probabilities) and not multi_label,
            cost_matrix=cost_matrix),
        training=TrainingConfig(
            epochs=f.epochs, batch_size=f.batch_size, learning_rate=f.learning_rate,
            steps_per_loop=f.steps_per_loop, seed=f.seed, deterministic=f.deterministic,
            skip_nonfinite_steps=f.skip_nonfinite_steps, jit_compile=f.jit_compile,
            weight_decay=f.weight_decay, mixed_precision=f.mixed_precision),
        distribution=DistributionConfig(strategy=f.strategy, num_cpu_devices=f.num_cpu_devices,
                                        tpu=f.tpu),
        output=OutputConfig(model_dir=f.model_dir, export_dir=f.export_dir,
                            allow_config_change=tuple(f.allow_config_change or ()),
                            verbosity=progress_verbosity(f), compare_baseline=f.compare_baseline,
                            confusion_matrix_every=f.confusion_matrix_every))
    check(config, explicit_calibrate=f.calibrate)
    return config


def resolve_loss(loss: str, reweighting: str, drw_rule: str) -> str:
    """`--loss=auto` resolved (see the flag's help); any other value as given."""
    if loss != "auto":
        return loss
    if reweighting == "none":
        return "logit_adjusted"
    if reweighting == "eqlv2" or (reweighting == "drw" and drw_rule == "eqlv2"):
        return "sigmoid_focal"
    return "cross_entropy"


# ------------------------------------------------------------------ the checks

# Flags a multi-label run (`--label_columns`) cannot honour, and why; refused when given.
_NOT_MULTI_LABEL = {
    "label_column": "--label_columns names the label columns",
    "num_classes": "the classes are the labels' yes/no values",
    "class_names": "the labels are named by --label_columns",
    "binary_head": "each label has its own sigmoid logit",
    "cost_matrix": "a cost matrix weighs the classes of one label per row",
    "decision_folds": "cross-fitted cut-offs are not built for multi-label runs; each label's cut-off "
                      "is chosen on the validation split",
    "decision_model": "there are no fold models (no --decision_folds)",
    "calibrate_probabilities": "temperature scaling is fitted to a softmax over classes; the labels' "
                               "sigmoids are served as they are",
    "compare_baseline": "the plain cross-entropy comparison is built for one label per row",
    "weighted_metrics": "the per-label metrics count rows",
    "confusion_matrix_every": "the TensorBoard images and PR curves are drawn for one label per row "
                              "(the per-label scalars are written)",
    "feature_key": "multi-label data are read from csv: or npz: files",
    "label_key": "multi-label data are read from csv: or npz: files",
}
# Losses of sigmoid logits, the multi-label choices (`auto` is cross_entropy there).
_MULTI_LABEL_LOSSES = ("cross_entropy", "sigmoid_focal", "asymmetric")


def _check_multi_label_flags(f: flags.FlagValues) -> None:
    """Refuses, for `--label_columns`, every given flag a multi-label run does not honour.

    Raises:
      UsageError: naming the flag and why it does not apply.
    """
    for name, why in _NOT_MULTI_LABEL.items():
        if f[name].present:
            raise UsageError(f"--{name} does not apply with --label_columns (a multi-label run): {why}. "
                             f"Drop --{name}.")
    if f.loss not in ("auto", *_MULTI_LABEL_LOSSES):
        raise UsageError(f"--loss={f.loss} is a loss of one softmax over classes; a multi-label run "
                         f"(--label_columns) trains a sigmoid per label: use --loss="
                         f"{', '.join(_MULTI_LABEL_LOSSES)}.")
    rules = (f.reweighting, f.drw_rule if f.reweighting == "drw" else None)
    if "eqlv2" in rules:
        raise UsageError("--reweighting=eqlv2 balances one-vs-all sigmoids of the classes of one label "
                         "per row; with --label_columns use --reweighting=inverse_frequency (each label's "
                         "positives against its negatives) or recall_target.")
    if f.recall_target_mode == "worst_class":
        raise UsageError("--recall_target_mode=worst_class raises the smallest recall over the classes of "
                         "one label per row; with --label_columns give --target_class=<label> and "
                         "--target_recall.")


def _check_cost_matrix_combination(f: flags.FlagValues) -> None:
    """Refuses `--cost_matrix` with another decision rule, or with `--calibrate=false`."""
    if f.cost_matrix is None:
        return
    if f.target_recall is not None:
        raise UsageError(f"--cost_matrix={f.cost_matrix} and --target_recall={_show(f.target_recall)} are "
                         f"two decision rules (least expected cost, or a recall to reach): give one.")
    if f.recall_target_mode == "worst_class":
        raise UsageError(f"--cost_matrix={f.cost_matrix} and --recall_target_mode=worst_class are two "
                         f"decision rules (least expected cost, or offsets that raise the smallest "
                         f"recall): give one.")
    if f.calibrate is False:
        raise UsageError(f"--cost_matrix={f.cost_matrix} chooses the served decision after training, "
                         f"and --calibrate=false turns that off: drop one.")



def check(config: RunConfig, *, explicit_calibrate: Optional[bool] = None) -> None:
    """Every check of the flags that needs no data, in the order a user fixes them.

    Args:
      config: The config to check.
      explicit_calibrate: `--calibrate` as given (None: not given), since a
        calibration asked for explicitly must have something to calibrate.

    Raises:
      UsageError: naming the flags that do not fit together.
      ArgumentError: naming the flag and the value out of range.
    """
    _check_loss(config.loss, config.recall)
    _check_binary_head(config)
    _check_recall(config, explicit_calibrate)
    _check_training(config.training)
    check_number(config.model.dropout, "--dropout", minimum=0.0, maximum=1.0, exclusive_maximum=True)
    _check_distribution(config.distribution)
    _check_allowed_changes(config)


def _check_loss(loss: LossConfig, recall: RecallConfig) -> None:
    uses_eqlv2 = loss.reweighting == "eqlv2" or (loss.reweighting == "drw" and loss.drw_rule == "eqlv2")
    if uses_eqlv2 and loss.loss != "sigmoid_focal":
        raise UsageError(
            f"EQL v2 (--reweighting={loss.reweighting}) needs a sigmoid (one-vs-all) loss: use "
            f"--loss=sigmoid_focal (--gamma=0 for plain sigmoid cross-entropy), not "
            f"--loss={loss.loss}. With a softmax loss it suppresses the head classes' negative "
            f"gradients and training collapses.")
    manual = loss.reweighting == "manual" or (loss.reweighting == "drw" and loss.drw_rule == "manual")
    if manual and not loss.class_weights:
        raise UsageError(f"--reweighting={loss.reweighting} needs --class_weights (one weight per "
                         f"class).")
    if loss.class_weights and not manual:
        raise UsageError(f"--class_weights is only used with --reweighting=manual "
                         f"(got --reweighting={loss.reweighting}).")
    target_rule = loss.reweighting == "target_class" or (
        loss.reweighting == "drw" and loss.drw_rule == "target_class")
    if target_rule and recall.target_class is None:
        raise UsageError(f"--reweighting={loss.reweighting} needs --target_class.")
    if target_rule and isinstance(recall.target_class, tuple):
        raise UsageError(f"--reweighting={loss.reweighting} up-weights one class, and "
                         f"--target_class={_show(recall.target_class)} names {len(recall.target_class)}: "
                         f"give one class.")


def _check_binary_head(config: RunConfig) -> None:
    """`--binary_head=sigmoid` with a rule built for one logit per class (EQL v2) is refused."""
    loss = config.loss
    if not config.model.one_logit:
        return
    if loss.reweighting == "eqlv2" or (loss.reweighting == "drw" and loss.drw_rule == "eqlv2"):
        raise UsageError(f"--reweighting={loss.reweighting} (EQL v2) acts on one sigmoid logit per class, "
                         f"and --binary_head=sigmoid trains a single logit for two classes: use "
                         f"--binary_head=softmax, or another rule (e.g. --reweighting=inverse_frequency).")


def _check_binary_head_classes(model: ModelConfig, num_classes: int) -> None:
    """`--binary_head=sigmoid` needs two-class data."""
    if model.one_logit and num_classes != 2:
        raise UsageError(f"--binary_head=sigmoid trains one logit for two classes, and the data has "
                         f"{num_classes} classes: use --binary_head=softmax (the default) for "
                         f"{num_classes} classes.")


def _check_several_targets(config: RunConfig) -> None:
    """Comma lists of `--target_class` and `--target_recall`: equal lengths, valid values, no controller."""
    recall = config.recall
    classes, recalls = recall.target_class, recall.target_recall
    count = len(classes) if isinstance(classes, tuple) else int(classes is not None)
    given = len(recalls) if isinstance(recalls, tuple) else int(recalls is not None)
    if count != given:
        raise UsageError(f"--target_class={_show(classes) if classes is not None else '(not given)'} and "
                         f"--target_recall={_show(recalls) if recalls is not None else '(not given)'} must "
                         f"be comma lists of the same length, one recall per target class: got {count} "
                         f"class(es) and {given} recall(s).")
    negative = [c for c in classes if isinstance(c, int) and c < 0]
    if negative:
        raise ArgumentError("--target_class", negative, "must be non-negative class indices (or names)")
    bad = [r for r in recalls if not 0.0 < r <= 1.0]
    if bad:
        raise ArgumentError("--target_recall", bad, "must each be in (0.0, 1.0]")
    if config.uses_controller and recall.recall_target_mode == "target_class":
        raise UsageError(
            f"--reweighting=recall_target steers one --target_class, and --target_class={_show(classes)} "
            f"--target_recall={_show(recalls)} are {count} targets. Drop --reweighting=recall_target: "
            f"the operating point chosen after training gives every target class its recall jointly "
            f"(with any loss, e.g. --loss=logit_adjusted).")


def _check_recall(config: RunConfig, explicit_calibrate: Optional[bool]) -> None:
    recall = config.recall
    if recall.several_targets:
        _check_several_targets(config)
    if config.uses_controller and recall.recall_target_mode == "target_class" and (
            recall.target_class is None or recall.target_recall is None):
        raise UsageError("--reweighting=recall_target with --recall_target_mode=target_class "
                         "needs --target_class and --target_recall.")
    if isinstance(recall.target_class, int):
        check_class_index(recall.target_class, "--target_class")
    if recall.target_recall is not None and not recall.several_targets:
        check_number(recall.target_recall, "--target_recall", minimum=0.0, maximum=1.0,
                     exclusive_minimum=True)
    if explicit_calibrate and recall.calibration_kind is None:
        raise UsageError("--calibrate needs --target_class and --target_recall (the recall to "
                         "reach), --recall_target_mode=worst_class (raise the smallest recall) or "
                         "--cost_matrix (the least expected cost).")
    if recall.recall_target_step_size is not None:
        check_positive(recall.recall_target_step_size, "--recall_target_step_size")
    check_number(recall.max_balanced_accuracy_drop, "--max_balanced_accuracy_drop", minimum=0.0,
                 maximum=1.0)
    check_number(recall.decision_confidence, "--decision_confidence", minimum=0.5, maximum=1.0,
                 exclusive_maximum=True)
    if recall.decision_folds is not None:
        check_integer(recall.decision_folds, "--decision_folds", minimum=0)
        if recall.decision_folds == 1:
            raise UsageError("--decision_folds=1 is no cross-fit: give 0 (off) or K >= 2 folds.")
        if recall.decision_folds and not recall.calibrate:
            raise UsageError(f"--decision_folds={recall.decision_folds} chooses the operating point, and "
                             f"no operating point is calibrated: give --target_class and "
                             f"--target_recall (or --recall_target_mode=worst_class with "
                             f"--calibrate).")
    for name in ("early_stopping_patience", "reduce_lr_patience"):
        value = getattr(recall, name)
        if value is not None:
            check_integer(value, f"--{name}", minimum=0)
    if recall.stop_at_recall is not None:
        check_number(recall.stop_at_recall, "--stop_at_recall")
    check_number(recall.reduce_lr_factor, "--reduce_lr_factor", minimum=0.0, maximum=1.0,
                 exclusive_minimum=True, exclusive_maximum=True)
    if recall.monitor is not None and recall.monitor.startswith("val_"):
        raise UsageError(f"--monitor names a metric without the val_ prefix (e.g. recall/3, "
                         f"min_recall, balanced_accuracy), got {recall.monitor!r}.")


def _check_training(training: TrainingConfig) -> None:
    for name in ("epochs", "batch_size", "steps_per_loop"):
        if getattr(training, name) is not None:
            check_positive_integer(getattr(training, name), f"--{name}")
    check_positive(training.learning_rate, "--learning_rate")
    check_number(training.weight_decay, "--weight_decay", minimum=0.0)
    if training.mixed_precision not in MIXED_PRECISION_POLICIES:
        raise UsageError(f"--mixed_precision={training.mixed_precision!r} is not a policy; choose one "
                         f"of {', '.join(MIXED_PRECISION_POLICIES)}.")
    check_integer(training.seed, "--seed", minimum=0, maximum=2**32 - 1)


def _check_distribution(distribution: DistributionConfig) -> None:
    check_positive_integer(distribution.num_cpu_devices, "--num_cpu_devices")
    if distribution.tpu is not None and distribution.strategy != "tpu":
        raise UsageError(f"--tpu={distribution.tpu} is only used with --strategy=tpu (got "
                         f"--strategy={distribution.strategy}).")


def allowed_change_names(config: RunConfig) -> Tuple[str, ...]:
    """The names `--allow_config_change` accepts: compared config fields and data facts."""
    return tuple(sorted(config.compared_values())) + DATA_NAMES


def _check_allowed_changes(config: RunConfig) -> None:
    valid = allowed_change_names(config)
    unknown = [name for name in config.output.allow_config_change if name not in valid]
    if unknown:
        raise UsageError(f"--allow_config_change={','.join(config.output.allow_config_change)}: "
                         f"{', '.join(map(repr, unknown))} is not something a resumed run compares; "
                         f"choose from {', '.join(valid)}.")
