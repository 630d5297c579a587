"""Dense evaluation of an encoder's frozen patch features.

Does an encoder keep what dense tasks need? Two views, on a segmentation
folder in mmseg's ADE20K layout (``images/<split>/*.jpg`` beside
``annotations/<split>/*.png``, 0 = unlabelled, k = class k - 1):

- in-context retrieval, the "Hummingbird" protocol (Balazevic et al.,
  "Towards In-context Scene Understanding", NeurIPS 2023): the
  L2-normalised patch tokens of labelled images are a memory bank, each
  patch labelled softly by the fraction of its labelled pixels of each
  class; each query patch averages the labels of its ``k`` most
  cosine-similar bank patches, weighted by softmax(similarity / T). No
  Hungarian matching (the open re-implementation adds one for unsupervised
  clustering; here the classes are known);
- a linear patch probe (Leopart's / DINOv2's linear protocol): one linear
  layer on the same frozen tokens, trained with cross-entropy against the
  patches' soft labels.

Both predict per patch; the (N, h, w, K) predictions are upsampled
bilinearly to the image, the argmax is compared with the mask in a
confusion matrix, and mIoU is mmseg's: IoU over the classes that are in
the masks or the predictions. With a few hundred images the images are
split into folds, each fold the queries of a bank made of the others, and
the mean over folds is reported with its intervals
(:mod:`~mrcl_plugin.evaluation.intervals`). The data is
:mod:`~mrcl_plugin.evaluation.seg_data`'s, the tokens
:mod:`~mrcl_plugin.evaluation.patch_tokens`'.
:class:`~mrcl_plugin.engine.hooks.DenseKNNHook` and
``tools/analysis_tools/dense_eval.py`` are built on these functions.
"""
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .intervals import summarise
from .patch_tokens import default_blocks, patch_features
from .seg_data import IGNORE, SegData, augment_bank, patch_labels

# -- in-context retrieval -----------------------------------------------------


def knn_patch_labels(bank_feats: torch.Tensor,
                     bank_labels: torch.Tensor,
                     query_feats: torch.Tensor,
                     k: int = 30,
                     temperatures: Sequence[float] = (0.02, ),
                     query_chunk: int = 1024,
                     bank_chunk: int = 32768) -> Dict[float, torch.Tensor]:
    """Each query's label distribution: the labels of its ``k`` most
    similar bank rows, weighted by softmax(similarity / T).

    The search is chunked (at most ``query_chunk`` x ``bank_chunk``
    similarities at once, a running top-k across bank chunks), so memory
    stays bounded however large the bank.

    Args:
        bank_feats (Tensor): (M, C) unit rows.
        bank_labels (Tensor): (M, K) label distributions.
        query_feats (Tensor): (Q, C) unit rows.

    Returns:
        dict: {T: (Q, K)}.
    """
    if k > len(bank_feats):
        raise ValueError(f'k={k} is more than the {len(bank_feats)} bank '
                         'patches')
    preds = {t: [] for t in temperatures}
    for q0 in range(0, len(query_feats), query_chunk):
        query = query_feats[q0:q0 + query_chunk]
        best_sim = query.new_empty(len(query), 0)
        best_idx = torch.empty(len(query), 0, dtype=torch.long,
                               device=query.device)
        for b0 in range(0, len(bank_feats), bank_chunk):
            sim = query @ bank_feats[b0:b0 + bank_chunk].T
            sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
            best_sim, order = torch.cat([best_sim, sim], 1).topk(
                min(k, best_sim.shape[1] + sim.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + b0], 1).gather(1, order)
        labels = bank_labels[best_idx]  # (q, k, K)
        for t in temperatures:
            weights = (best_sim / t).softmax(1)
            preds[t].append(torch.einsum('qk,qkc->qc', weights, labels))
    return {t: torch.cat(p) for t, p in preds.items()}


# -- scoring ------------------------------------------------------------------



def upsampled_argmax(patch_scores: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w, K) patch scores -> (N, size, size) class map: bilinear
    upsampling of the scores, then argmax."""
    scores = F.interpolate(patch_scores.permute(0, 3, 1, 2).float(),
                           size=(size, size), mode='bilinear',
                           align_corners=False)
    return scores.argmax(1)


def image_areas(pred: torch.Tensor, masks: torch.Tensor,
                num_classes: int) -> torch.Tensor:
    """(N, 3, K) per image and class: the areas of intersection, of the
    prediction and of the label, from each image's confusion matrix
    (unlabelled pixels left out). mIoU over any set of images is a
    function of their sum (:func:`miou`)."""
    areas = []
    for p, m in zip(pred, masks):
        keep = m != IGNORE
        confusion = torch.bincount(
            m[keep] * num_classes + p[keep],
            minlength=num_classes * num_classes).view(num_classes,
                                                      num_classes)
        areas.append(torch.stack([confusion.diag(), confusion.sum(0),
                                  confusion.sum(1)]))
    return torch.stack(areas).double()


def folds_of(names: Sequence[str], folds: int) -> torch.Tensor:
    """(N, ) the fold of each image: round robin over the sorted distinct
    names (augmented copies share their image's), so the folds do not
    depend on the order of the images."""
    order = {n: i % folds for i, n in enumerate(sorted(set(names)))}
    return torch.tensor([order[n] for n in names])


# -- the two protocols --------------------------------------------------------



def dense_knn(feats: torch.Tensor,
              data: SegData,
              patch_size: int,
              folds: int = 5,
              k: int = 30,
              temperatures: Sequence[float] = (0.02, 0.07),
              bank: Optional[Tuple[torch.Tensor, SegData]] = None,
              **chunks) -> Dict[float, List[torch.Tensor]]:
    """In-context retrieval with ``folds``-fold cross-validation: the images
    of each fold are the queries of a bank of the patches of the others.

    Args:
        feats: (N, h, w, C) :func:`patch_features` of ``data``'s images.
        bank: (features, data) of the bank images when they are not
            ``feats`` and ``data`` (memory-bank augmentation); a bank image
            is used in the folds its name is not in.

    Returns:
        dict: {T: per fold, its queries' (n_f, 3, K) :func:`image_areas`}.
    """
    bank_feats, bank_data = bank or (feats, data)
    labels = patch_labels(bank_data.masks, patch_size, data.num_classes)
    bank_fold = folds_of(bank_data.names, folds)
    query_fold = folds_of(data.names, folds)
    if set(bank_data.names) != set(data.names):
        raise ValueError('the bank must be made of the query images')
    out = {t: [] for t in temperatures}
    size = data.masks.shape[-1]
    for f in range(folds):
        queries = (query_fold == f).nonzero()[:, 0]
        if not len(queries):
            continue
        b_feats = bank_feats[bank_fold != f].flatten(0, 2)
        b_labels = labels[bank_fold != f].flatten(0, 2)
        labelled = b_labels.sum(1) > 0  # unlabelled patches: out
        q = feats[queries]
        preds = knn_patch_labels(b_feats[labelled], b_labels[labelled],
                                 q.flatten(0, 2), k, temperatures, **chunks)
        for t, p in preds.items():
            pred = upsampled_argmax(p.view(*q.shape[:3], -1), size)
            out[t].append(image_areas(pred, data.masks[queries],
                                      data.num_classes))
    return out


def train_linear_probe(feats: torch.Tensor, labels: torch.Tensor,
                       epochs: int = 100, lr: float = 0.01,
                       seed: int = 0) -> torch.nn.Linear:
    """One linear layer trained on frozen patch features against their soft
    labels: cross-entropy at patch resolution (patches without a labelled
    pixel left out), full-batch Adam from a seeded init (deterministic).
    The features are standardised with the training statistics, folded
    into the returned layer.

    Args:
        feats: (M, C); labels: (M, K) distributions.
    """
    keep = labels.sum(1) > 0
    x, y = feats[keep], labels[keep]
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    g = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.01)
        fc.bias.zero_()
    optim = torch.optim.Adam(fc.parameters(), lr=lr)
    for _ in range(epochs):
        optim.zero_grad()
        loss = -(y * fc(x).log_softmax(1)).sum(1).mean()
        loss.backward()
        optim.step()
    with torch.no_grad():  # fc((x - mean) / std) as one layer
        folded = torch.nn.Linear(x.shape[1], y.shape[1])
        folded.weight.copy_(fc.weight / std)
        folded.bias.copy_(fc.bias - (fc.weight / std) @ mean)
    return folded.requires_grad_(False)


def dense_linear(feats: torch.Tensor,
                 data: SegData,
                 patch_size: int,
                 folds: int = 5,
                 epochs: int = 100,
                 lr: float = 0.01) -> List[torch.Tensor]:
    """The linear patch probe with the folds of :func:`dense_knn`: trained
    on the patches of the other folds, its logits upsampled to the image.

    Returns:
        list: per fold, its queries' (n_f, 3, K) :func:`image_areas`.
    """
    labels = patch_labels(data.masks, patch_size, data.num_classes)
    fold = folds_of(data.names, folds)
    size, out = data.masks.shape[-1], []
    for f in range(folds):
        queries = (fold == f).nonzero()[:, 0]
        if not len(queries):
            continue
        probe = train_linear_probe(feats[fold != f].flatten(0, 2),
                                   labels[fold != f].flatten(0, 2), epochs,
                                   lr)
        with torch.no_grad():
            pred = upsampled_argmax(probe(feats[queries]), size)
        out.append(image_areas(pred, data.masks[queries], data.num_classes))
    return out


def dense_eval(model,
               data: SegData,
               blocks: Optional[Sequence[int]] = None,
               folds: int = 5,
               k: int = 30,
               temperatures: Sequence[float] = (0.02, 0.07),
               bank_copies: int = 0,
               linear: bool = True,
               linear_epochs: int = 100,
               bootstrap: int = 1000,
               batch_size: int = 64,
               keep_areas: bool = False) -> Dict[str, Dict]:
    """Dense k-NN retrieval and (with ``linear``) the linear patch probe of
    ``model``'s frozen patch tokens on ``data``, ``folds``-fold.

    Args:
        model: see :func:`patch_features`; used as it is (eval mode).
        blocks: 0-based; defaults to :func:`default_blocks`.
        bank_copies (int): memory-bank augmentation: this many random
            resized crops of each image join the bank (:func:`augment_bank`).

        keep_areas (bool): keep each figure's per-image areas
            (``areas``: per fold, its queries' (n_f, 3, K)), for paired
            comparisons between encoders
            (:func:`~mrcl_plugin.evaluation.intervals.paired_bootstrap`).

    Returns:
        dict: ``knn_b{block}_t{T}`` and ``linear_b{block}``, each with
        ``miou`` (%), the mean over folds, and its bootstrap interval
        ``low``, ``high``.
    """
    backbone = model.backbone
    blocks = tuple(blocks or default_blocks(len(backbone.layers)))
    patch = backbone.patch_embed.projection.stride[0]
    feats = patch_features(model, data.images, blocks, batch_size)
    bank = None
    if bank_copies:
        bank_data = augment_bank(data, bank_copies)
        bank_feats = patch_features(model, bank_data.images, blocks,
                                    batch_size)
    results = {}
    for b in blocks:
        if bank_copies:
            bank = (torch.cat([feats[b], bank_feats[b]]),
                    replace(bank_data,
                            masks=torch.cat([data.masks, bank_data.masks]),
                            names=data.names + bank_data.names))
        found = {f'knn_b{b}_t{t:g}': areas for t, areas in dense_knn(
            feats[b], data, patch, folds, k, temperatures, bank).items()}
        if linear:
            found[f'linear_b{b}'] = dense_linear(feats[b], data, patch,
                                                 folds, linear_epochs)
        for key, areas in found.items():
            results[key] = summarise(areas, bootstrap)
            if keep_areas:
                results[key]['areas'] = areas
    return results
