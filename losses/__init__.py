"""Per-example losses and per-class gradient reweighting rules for imbalanced classification.

Losses are Keras `Loss` classes (also usable in `model.fit`); rules act on dL/dlogits inside the Trainer.
"""

from losses.asymmetric import AsymmetricLoss
from losses.compose import Compose
from losses.cross_entropy import sparse_cross_entropy
from losses.deferred import DeferredReweighting
from losses.equalization import EqualizationV2
from losses.focal import SigmoidFocalCrossentropy, SparseFocalCrossentropy
from losses.prior_adjusted import (
    BalancedSoftmaxCrossentropy,
    LDAMCrossentropy,
    LogitAdjustedCrossentropy,
    logit_adjustment_offsets,
    posthoc_logit_adjustment,
)
from losses.prior_warnings import loss_corrects_prior, warn_if_prior_counted_twice
from losses.registry import DRW_RULE_NAMES, LOSS_NAMES, RULE_NAMES, make_loss, make_rule
from losses.rules import (
    ABSENT_CLASS_PSEUDO_COUNT,
    TINY_CLASS_SIZE,
    ClassWeights,
    ReweightingRule,
    SmallClassWarning,
    TargetClassWeight,
    TrainingContext,
    deserialize_rule,
    effective_number_weights,
    inverse_frequency_weights,
    observed_class_counts,
    serialize_rule,
    validate_class_counts,
    validate_class_weights,
)
from losses.weighted_recall import WeightedRecallCrossentropy

__all__ = [
    "ABSENT_CLASS_PSEUDO_COUNT",
    "AsymmetricLoss",
    "BalancedSoftmaxCrossentropy",
    "ClassWeights",
    "Compose",
    "DRW_RULE_NAMES",
    "DeferredReweighting",
    "EqualizationV2",
    "LDAMCrossentropy",
    "LOSS_NAMES",
    "LogitAdjustedCrossentropy",
    "RULE_NAMES",
    "ReweightingRule",
    "SigmoidFocalCrossentropy",
    "SmallClassWarning",
    "SparseFocalCrossentropy",
    "TINY_CLASS_SIZE",
    "TargetClassWeight",
    "TrainingContext",
    "WeightedRecallCrossentropy",
    "deserialize_rule",
    "effective_number_weights",
    "inverse_frequency_weights",
    "logit_adjustment_offsets",
    "loss_corrects_prior",
    "make_loss",
    "make_rule",
    "observed_class_counts",
    "posthoc_logit_adjustment",
    "serialize_rule",
    "sparse_cross_entropy",
    "validate_class_counts",
    "validate_class_weights",
    "warn_if_prior_counted_twice",
]
