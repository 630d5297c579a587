"""Evaluation of an encoder without fine-tuning: kNN on the class token
(:mod:`.knn`), and the dense evaluation of its patch tokens on a
segmentation folder (:mod:`.dense`, on :mod:`.seg_data` and
:mod:`.patch_tokens`), with the intervals a comparison needs
(:mod:`.intervals`); :mod:`.models` builds the model a tool evaluates."""
from .dense import dense_eval, dense_knn, dense_linear
from .intervals import paired_bootstrap, seed_interval, summarise, verdict
from .knn import (balanced_subset, bank_and_query_features, eval_pipeline,
                  extract_features, knn_eval, knn_top1, split_dataset)
from .models import build_model, load_weights
from .patch_tokens import patch_features
from .seg_data import SegData, SegFolderError, load_seg_folder

__all__ = [
    'SegData', 'SegFolderError', 'balanced_subset', 'bank_and_query_features',
    'build_model', 'dense_eval', 'dense_knn', 'dense_linear', 'eval_pipeline',
    'extract_features', 'knn_eval', 'knn_top1', 'load_seg_folder',
    'load_weights', 'paired_bootstrap', 'patch_features', 'seed_interval',
    'split_dataset', 'summarise', 'verdict'
]
