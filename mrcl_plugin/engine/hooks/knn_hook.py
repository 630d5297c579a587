"""kNN top-1 of the encoder during pretraining, logged as ``knn/top1``."""
import time
from typing import Callable, Optional

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ...evaluation.knn import knn_eval, split_dataset
from .utils import bare_model


def evaluate_on_rank0(runner, evaluate: Callable):
    """``evaluate(model)`` on rank 0 with the bare model in eval mode (its
    mode restored after), the result sent to every rank."""
    model = bare_model(runner)
    result = [None]
    if is_main_process():
        was_training = model.training
        model.eval()
        try:
            result[0] = evaluate(model)
        finally:
            model.train(was_training)
    broadcast_object_list(result)
    return result[0]


@HOOKS.register_module()
class KNNHook(Hook):
    """Evaluate weighted k-NN (:func:`~mrcl_plugin.evaluation.knn_eval`)
    on the current backbone every ``interval`` iterations and after the
    last, and log the top-1 (%) as ``knn/top1``: to the message hub, the
    log, and the visualizer's backends (the json log and ``scalars.json``
    of ``LocalVisBackend``, TensorBoard) at step ``iter + 1``.

    The model is evaluated in eval mode without gradients and put back in
    train mode after. Under DDP rank 0 evaluates and sends the result to
    the other ranks.

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
    priority = 'NORMAL'  # before LoggerHook, so the value is in its output

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
        if not (isinstance(interval, int) and interval > 0):
            raise ValueError(
                f'KNNHook interval must be a positive int, got {interval!r}')
        self.interval = interval
        self.data_root = data_root
        self.eval_before_train = before_train
        self.eval_kwargs = dict(
            bank_split=bank, query_split=query,
            bank_per_class=bank_per_class, query_per_class=query_per_class,
            k=k, temperature=temperature, batch_size=batch_size,
            num_workers=num_workers)

    def before_train(self, runner) -> None:
        if self.data_root is None:
            self.data_root = runner.cfg.train_dataloader.dataset.data_root
        # a missing split stops the run now, not after its last iteration
        for split in (self.eval_kwargs['bank_split'],
                      self.eval_kwargs['query_split']):
            split_dataset(self.data_root, split)
        if self.eval_before_train:
            self.evaluate(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if (self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            self.evaluate(runner, step=runner.iter + 1)

    def evaluate(self, runner, step: int) -> float:
        """Evaluate now and log ``knn/top1`` at ``step``; returns it."""
        start = time.time()
        top1 = evaluate_on_rank0(runner, lambda model: knn_eval(
            model, self.data_root, **self.eval_kwargs)['top1'])
        runner.message_hub.update_scalar('knn/top1', top1)
        runner.visualizer.add_scalars({'knn/top1': top1}, step=step,
                                      file_path=f'{runner.timestamp}.json')
        runner.logger.info(
            f'Iter(train) [{step}/{runner.max_iters}]  knn/top1: '
            f'{top1:.2f}  (k={self.eval_kwargs["k"]}, '
            f'{time.time() - start:.0f} s)')
        return top1
