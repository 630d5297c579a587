"""Dense k-NN mIoU of the encoder's patch tokens during pretraining,
logged as ``dense/knn_b<block>_t<T>``."""
from typing import Optional, Sequence

from mmpretrain.registry import HOOKS

from ...evaluation.dense import dense_eval
from ...evaluation.patch_tokens import check_geometry, default_blocks
from ...evaluation.seg_data import load_seg_folder
from .utils import PeriodicEvaluationHook, bare_model


@HOOKS.register_module()
class DenseKNNHook(PeriodicEvaluationHook):
    """In-context retrieval mIoU (the Hummingbird protocol,
    :mod:`mrcl_plugin.evaluation.dense`) of the current backbone's frozen
    patch tokens every ``interval`` iterations and after the last, for each
    block and temperature, ``folds``-fold over the images of a segmentation
    folder; logged as ``dense/knn_b<block>_t<T>`` (mIoU %, the mean over
    folds) the way :class:`KNNHook` logs ``knn/top1``: to the message hub,
    the log and the visualizer's backends at step ``iter + 1``.

    The folder is read once, before training (a missing folder, mask or a
    mask of the wrong size stops the run then, not after its last
    iteration). The schedule, logging and rank-0 evaluation are
    :class:`~mrcl_plugin.engine.hooks.utils.PeriodicEvaluationHook`'s.

    Args:
        interval (int): iterations between evaluations.
        data_root (str): a segmentation folder in mmseg's ADE20K layout
            (``images/<split>``, ``annotations/<split>``).
        splits (sequence of str): its splits, pooled. Defaults to
            ('training', 'validation').
        size (int, optional): the square size images are evaluated at;
            defaults to the backbone's ``img_size`` (its native grid).
        blocks (sequence of int, optional): 0-based blocks; defaults to the
            middle one and the last (:func:`default_blocks`).
        k (int): neighbours. Defaults to 30.
        temperatures (sequence of float): softmax temperatures, each logged.
            Defaults to (0.02, 0.07).
        folds (int): cross-validation folds. Defaults to 5.
        batch_size (int): of the feature extraction. Defaults to 64.
        every (int): evaluate every n-th image of the folder (in name
            order): a fixed subset, for cheaper points. Defaults to 1.
        before_train (bool): evaluate before the first iteration too (step
            ``iter``), so the curve starts at the initial weights.
    """

    def __init__(self,
                 interval: int,
                 data_root: str,
                 splits: Sequence[str] = ('training', 'validation'),
                 size: Optional[int] = None,
                 blocks: Optional[Sequence[int]] = None,
                 k: int = 30,
                 temperatures: Sequence[float] = (0.02, 0.07),
                 folds: int = 5,
                 batch_size: int = 64,
                 every: int = 1,
                 before_train: bool = False) -> None:
        super().__init__(interval, before_train)
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f'DenseKNNHook every must be an int >= 1, got '
                             f'{every!r}')
        self.data_root = data_root
        self.splits = tuple(splits)
        self.every = every
        self.size = size
        self.blocks = blocks
        self.knn_kwargs = dict(folds=folds, k=k,
                               temperatures=tuple(temperatures))
        self.batch_size = batch_size

    def prepare(self, runner) -> None:
        backbone = bare_model(runner).backbone
        if self.blocks is None:
            self.blocks = default_blocks(len(backbone.layers))
        size = self.size or backbone.img_size[0]
        check_geometry(backbone, size, self.blocks)  # now, not at the end
        self.data = load_seg_folder(self.data_root, size, self.splits)
        if self.every > 1:  # a fixed subset: cheaper points on a curve
            self.data = self.data.subset(
                range(0, len(self.data.names), self.every))

    def figures(self, model) -> dict:
        """{`dense/knn_b<block>_t<T>`: mIoU} of ``model`` now: the retrieval
        of :func:`dense_eval`, without the probe and the bootstrap."""
        results = dense_eval(model, self.data, self.blocks, linear=False,
                             bootstrap=0, batch_size=self.batch_size,
                             **self.knn_kwargs)
        return {f'dense/{key}': r['miou'] for key, r in results.items()}

    def describe(self) -> str:
        return (f'{len(self.data.names)} images, '
                f'{self.knn_kwargs["folds"]} folds, ')
