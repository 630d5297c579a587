"""kNN top-1 of the encoder during pretraining, logged as ``knn/top1``."""
from typing import Optional

from mmpretrain.registry import HOOKS

from ...evaluation.knn import knn_eval, split_dataset
from .utils import PeriodicEvaluationHook


@HOOKS.register_module()
class KNNHook(PeriodicEvaluationHook):
    """Evaluate weighted k-NN (:func:`~mrcl_plugin.evaluation.knn_eval`)
    on the current backbone every ``interval`` iterations and after the
    last, and log the top-1 (%) as ``knn/top1``: to the message hub, the
    log, and the visualizer's backends (the json log and ``scalars.json``
    of ``LocalVisBackend``, TensorBoard) at step ``iter + 1``.

    The schedule, logging and rank-0 evaluation are
    :class:`~mrcl_plugin.engine.hooks.utils.PeriodicEvaluationHook`'s.

    Args:
        interval (int): iterations between evaluations.
        data_root (str, optional): ImageNet-style folder with ``meta/`` and
            the splits; defaults to the train dataloader's ``data_root``.
        bank (str): split of the labelled bank. Defaults to 'train'.
        query (str): split of the queries ('val' where there is no 'test').
        bank_per_class, query_per_class (int, optional): use the first N
            images of each class (the whole split when None) to keep
            frequent evaluations cheap.
        k (int): neighbours that vote. Defaults to 20.
        temperature (float): vote weight exp(similarity / T). Defaults to
            0.07.
        batch_size, num_workers (int): of the feature-extraction loader.
        before_train (bool): evaluate before the first iteration too (step
            ``iter``: 0, or where a resumed run starts), so the curve starts
            at the initial weights. Defaults to False.
    """

    def __init__(self,
                 interval: int,
                 data_root: Optional[str] = None,
                 bank: str = 'train',
                 query: str = 'test',
                 bank_per_class: Optional[int] = None,
                 query_per_class: Optional[int] = None,
                 k: int = 20,
                 temperature: float = 0.07,
                 batch_size: int = 256,
                 num_workers: int = 2,
                 before_train: bool = False) -> None:
        super().__init__(interval, before_train)
        self.data_root = data_root
        self.eval_kwargs = dict(
            bank_split=bank, query_split=query,
            bank_per_class=bank_per_class, query_per_class=query_per_class,
            k=k, temperature=temperature, batch_size=batch_size,
            num_workers=num_workers)

    def prepare(self, runner) -> None:
        if self.data_root is None:
            self.data_root = runner.cfg.train_dataloader.dataset.data_root
        # a missing split stops the run now, not after its last iteration
        for split in (self.eval_kwargs['bank_split'],
                      self.eval_kwargs['query_split']):
            split_dataset(self.data_root, split)

    def figures(self, model) -> dict:
        return {'knn/top1': knn_eval(model, self.data_root,
                                     **self.eval_kwargs)['top1']}

    def describe(self) -> str:
        return f'k={self.eval_kwargs["k"]}, '
