from .dense import (SegData, SegFolderError, dense_eval, dense_knn,
                    dense_linear, load_seg_folder, patch_features)
from .knn import (balanced_subset, bank_and_query_features, build_model,
                  eval_pipeline, extract_features, knn_eval, knn_top1,
                  load_weights, split_dataset)

__all__ = [
    'SegData', 'SegFolderError', 'balanced_subset', 'bank_and_query_features',
    'build_model', 'dense_eval', 'dense_knn', 'dense_linear', 'eval_pipeline',
    'extract_features', 'knn_eval', 'knn_top1', 'load_seg_folder',
    'load_weights', 'patch_features', 'split_dataset'
]
