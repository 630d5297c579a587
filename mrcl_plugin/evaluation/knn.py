"""Weighted k-NN evaluation of an encoder's features (DINO's protocol).

The class tokens of the full (unmasked) images of a classification split are
the features; each query's k most cosine-similar bank features vote for
their labels with weight ``exp(s / T)``. Neither mmpretrain 1.2 nor mmengine
ships this; :class:`~mrcl_plugin.engine.hooks.KNNHook` and
``tools/analysis_tools/knn_eval.py`` are built on these functions.
"""
import math
import os.path as osp
import time
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dataset import default_collate
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmpretrain.datasets import CustomDataset
from torch.utils.data import DataLoader, Subset


Features = Tuple[torch.Tensor, torch.Tensor]  # (N, C) unit rows, (N, ) labels


def eval_pipeline(img_size: int) -> List[dict]:
    """Load an image, scale its short edge to ``img_size``, centre-crop it
    square (a no-op on images already that size) and pack it."""
    return [
        dict(type='LoadImageFromFile', color_type='color'),
        dict(type='ResizeEdge', scale=img_size, edge='short',
             backend='pillow'),
        dict(type='CenterCrop', crop_size=img_size),
        dict(type='PackInputs'),
    ]


def split_dataset(data_root: str, split: str,
                  pipeline: Optional[List[dict]] = None) -> CustomDataset:
    """The labelled ``split`` (``train``, ``test`` or ``val``) of an
    ImageNet-style folder: ``meta/<split>.txt`` and ``<split>/``; ``test``
    falls back to ``val`` where there is no test split. The default pipeline
    loads and packs the images as they are."""
    if split == 'test' and not osp.isfile(
            osp.join(data_root, 'meta/test.txt')):
        split = 'val'
    ann = osp.join(data_root, f'meta/{split}.txt')
    if not osp.isfile(ann):
        raise FileNotFoundError(
            f'no {split} split for kNN: {ann} does not exist (data_root '
            f'{data_root!r} must hold meta/{split}.txt and {split}/)')
    # mmpretrain's transforms, whatever scope the caller runs in (a test or
    # tool that ran mmseg/mmdet before leaves theirs as the default).
    # serialize_data=False: mmengine's serialisation (which spares forked
    # workers the copy of a huge list) was most of the cost of each build
    # of a large split, and a kNN hook builds two per point.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return CustomDataset(
            data_root=data_root, ann_file=f'meta/{split}.txt',
            data_prefix=split, serialize_data=False,
            pipeline=pipeline or [
                dict(type='LoadImageFromFile', color_type='color'),
                dict(type='PackInputs')
            ])


def balanced_subset(dataset: CustomDataset,
                    per_class: Optional[int] = None) -> List[int]:
    """Indices of the first ``per_class`` images of each class (all images
    when ``per_class`` is None)."""
    labels = dataset.get_gt_labels()
    if per_class is None:
        return list(range(len(labels)))
    seen, indices = {}, []
    for i, label in enumerate(labels):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            indices.append(i)
    return indices


@torch.no_grad()
def extract_features(model,
                     dataset,
                     indices: Optional[List[int]] = None,
                     batch_size: int = 256,
                     num_workers: int = 2,
                     name: str = 'images') -> Features:
    """Unit-normalised ``model.extract_feat`` features (the class token of
    the unmasked images for MRCL) of ``dataset[indices]``, in batches, with
    a log line about every quarter of the way.

    Returns:
        tuple: features (N, C) and labels (N, ).
    """
    subset = Subset(dataset, indices or range(len(dataset)))
    # its own generator: iterating must not draw from the global RNG, or a
    # KNNHook would change the course of the training it watches
    loader = DataLoader(subset, batch_size=batch_size,
                        num_workers=num_workers, collate_fn=default_collate,
                        generator=torch.Generator())
    device = next(model.parameters()).device
    feats, labels, done, start = [], [], 0, time.time()
    report_every = max(1, len(loader) // 4)
    for i, data in enumerate(loader):
        inputs = model.data_preprocessor(data)['inputs'].to(device)
        feats.append(torch.nn.functional.normalize(
            model.extract_feat(inputs)[0].float()).cpu())
        labels.append(torch.cat([d.gt_label for d in data['data_samples']]))
        done += len(inputs)
        if (i + 1) % report_every == 0 or i + 1 == len(loader):
            print_log(f'kNN features of {name}: {done}/{len(subset)} '
                      f'({time.time() - start:.0f} s)', logger='current')
    return torch.cat(feats), torch.cat(labels)


def knn_top1(bank: Features, queries: Features, k: int = 20,
             temperature: float = 0.07, chunk: int = 1024) -> float:
    """Top-1 accuracy (%) of weighted k-NN: each query's ``k`` most similar
    bank rows vote for their labels with weight exp(similarity / T).

    Args:
        bank, queries: (features (N, C), labels (N, )), features unit-norm.
        chunk (int): queries per similarity matrix, to bound memory.
    """
    (bank_feats, bank_labels), (query_feats, query_labels) = bank, queries
    if k > len(bank_feats):
        raise ValueError(f'k={k} is more than the {len(bank_feats)} bank '
                         'features')
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    correct = 0
    for start in range(0, len(query_feats), chunk):
        sim, idx = (query_feats[start:start + chunk] @ bank_feats.T).topk(
            k, dim=1)
        votes = torch.zeros(len(sim), num_classes)
        votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == query_labels[start:start + chunk]
                    ).sum().item()
    return 100. * correct / len(query_feats)


def bank_and_query_features(
        model,
        data_root: str,
        bank_split: str = 'train',
        query_split: str = 'test',
        bank_per_class: Optional[int] = None,
        query_per_class: Optional[int] = None,
        batch_size: int = 256,
        num_workers: int = 2) -> Tuple[Features, Features]:
    """:func:`extract_features` of the bank and the query split under
    ``data_root`` (whole, or the first ``*_per_class`` images of each
    class), through :func:`eval_pipeline` at the model's image size."""
    pipeline = eval_pipeline(model.backbone.img_size[0])
    feats = []
    for split, per_class in ((bank_split, bank_per_class),
                             (query_split, query_per_class)):
        dataset = split_dataset(data_root, split, pipeline)
        feats.append(extract_features(
            model, dataset, balanced_subset(dataset, per_class), batch_size,
            num_workers, name=f'the {split} split'))
    return feats[0], feats[1]


def knn_eval(model,
             data_root: str,
             bank_split: str = 'train',
             query_split: str = 'test',
             bank_per_class: Optional[int] = None,
             query_per_class: Optional[int] = None,
             k: int = 20,
             temperature: float = 0.07,
             batch_size: int = 256,
             num_workers: int = 2) -> Dict[str, float]:
    """kNN top-1 of ``model``'s features on the splits under ``data_root``:
    the whole splits by default, or the first ``*_per_class`` images of each
    class. The model is used as it is (put it in eval mode first).

    Returns:
        dict: ``top1`` (%), its binomial standard error ``se`` (points,
        sqrt(p(1-p)/n) over the n queries), ``bank`` and ``queries`` (the
        numbers of images).
    """
    feats = bank_and_query_features(model, data_root, bank_split,
                                    query_split, bank_per_class,
                                    query_per_class, batch_size, num_workers)
    top1 = knn_top1(*feats, k=k, temperature=temperature)
    bank, queries = len(feats[0][0]), len(feats[1][0])
    se = 100 * math.sqrt(top1 / 100 * (1 - top1 / 100) / queries)
    return dict(top1=top1, se=se, bank=bank, queries=queries)
