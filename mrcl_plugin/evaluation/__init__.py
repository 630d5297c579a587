from .knn import (balanced_subset, bank_and_query_features, build_model,
                  eval_pipeline, extract_features, knn_eval, knn_top1,
                  load_weights, split_dataset)

__all__ = [
    'balanced_subset', 'bank_and_query_features', 'build_model',
    'eval_pipeline', 'extract_features', 'knn_eval', 'knn_top1',
    'load_weights', 'split_dataset'
]
