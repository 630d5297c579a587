"""Weighted kNN accuracy of a pretrained encoder's features (DINO's protocol:
cosine similarity, k nearest train features vote with weight exp(s / T)).

    python tools/analysis/knn_eval.py CONFIG CHECKPOINT [--per-class 200]

Features are the encoder's class tokens of the full (unmasked) images of the
classification set next to the config's pretraining data (``meta/train.txt``
and ``meta/test.txt`` or ``meta/val.txt`` under its ``data_root``). The same
encoder with random weights is evaluated too, as the floor to beat.
"""
import argparse
import logging
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import MODELS

import mrcl_plugin  # noqa: F401


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--per-class', type=int, default=100,
                        help='train (bank) images per class')
    parser.add_argument('--test-per-class', type=int, default=50)
    parser.add_argument('-k', type=int, default=20)
    parser.add_argument('--temperature', type=float, default=0.07)
    parser.add_argument('--batch', type=int, default=256)
    return parser.parse_args()


def balanced_subset(data_root: str, split: str, per_class: int):
    ann = 'meta/test.txt' if split == 'test' else f'meta/{split}.txt'
    if not osp.isfile(osp.join(data_root, ann)) and split == 'test':
        split, ann = 'val', 'meta/val.txt'
    dataset = CustomDataset(
        data_root=data_root, ann_file=ann, data_prefix=split,
        pipeline=[dict(type='LoadImageFromFile', color_type='color'),
                  dict(type='PackInputs')])
    seen, indices = {}, []
    for i, label in enumerate(dataset.get_gt_labels()):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            indices.append(i)
    return dataset, indices


@torch.no_grad()
def features(model, dataset, indices, batch):
    feats, labels = [], []
    for start in range(0, len(indices), batch):
        data = default_collate(
            [dataset[i] for i in indices[start:start + batch]])
        inputs = model.data_preprocessor(data)['inputs']
        feats.append(
            torch.nn.functional.normalize(model.extract_feat(inputs)[0]))
        labels.append(torch.cat([d.gt_label for d in data["data_samples"]]))
    return torch.cat(feats), torch.cat(labels)


def build_model(cfg: Config, checkpoint=None):
    """The config's model with the config's data preprocessor (as the
    Runner builds it), random init or loaded from ``checkpoint``, in eval
    mode."""
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    logger = MMLogger.get_current_instance()
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', logger=logger)
    else:
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every tensor
        model.init_weights()
        logger.setLevel(level)
    return model.eval()


def knn_top1(train, test, k, temperature) -> float:
    (bank, bank_labels), (query, query_labels) = train, test
    sim, idx = (query @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(query), int(bank_labels.max()) + 1)
    votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
    return (votes.argmax(1) == query_labels).float().mean().item() * 100


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    data_root = cfg.train_dataloader.dataset.data_root
    train_set, train_idx = balanced_subset(data_root, 'train', args.per_class)
    test_set, test_idx = balanced_subset(data_root, 'test',
                                         args.test_per_class)
    print(f'kNN on {data_root}: {len(train_idx)} bank images, '
          f'{len(test_idx)} test images, k={args.k}')
    results = {}
    for name in ('random init', 'pretrained'):
        model = build_model(
            cfg, args.checkpoint if name == 'pretrained' else None)
        results[name] = knn_top1(
            features(model, train_set, train_idx, args.batch),
            features(model, test_set, test_idx, args.batch), args.k,
            args.temperature)
        print(f'  {name:>11}: kNN top-1 {results[name]:.1f}%')
    return results


if __name__ == '__main__':
    main()
