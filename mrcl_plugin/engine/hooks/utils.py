"""What the hooks share: the bare model, evaluation on rank 0, and the
schedule and logging of a periodic evaluation during training."""
import time
from typing import Callable, Dict

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def bare_model(runner):
    """The runner's model, out of its DDP (or other) wrapper."""
    return runner.model.module if is_model_wrapper(
        runner.model) else runner.model


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


class PeriodicEvaluationHook(Hook):
    """Evaluate the model every ``interval`` iterations, after the last and
    (with ``before_train``) before the first, and log the figures at step
    ``iter + 1`` (``iter`` before training): to the message hub, the log
    line and the visualizer's backends (the json log and ``scalars.json``
    of ``LocalVisBackend``, TensorBoard). Rank 0 evaluates, in eval mode
    without gradients, and sends the figures to the other ranks.

    A subclass reads its data in :meth:`prepare` (before training, so that
    bad data stops the run before its first iteration) and returns
    ``{name: value}`` from :meth:`figures`.
    """
    priority = 'NORMAL'  # before LoggerHook, so the values are in its line

    def __init__(self, interval: int, before_train: bool = False) -> None:
        if not (isinstance(interval, int) and interval > 0):
            raise ValueError(f'{type(self).__name__} interval must be a '
                             f'positive int, got {interval!r}')
        self.interval = interval
        self.eval_before_train = before_train

    def prepare(self, runner) -> None:
        """Read and check the evaluation data (once, before training)."""

    def figures(self, model) -> Dict[str, float]:
        raise NotImplementedError

    def describe(self) -> str:
        """What the log line adds after the figures (data, settings)."""
        return ''

    def before_train(self, runner) -> None:
        self.prepare(runner)
        if self.eval_before_train:
            self.evaluate(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if (self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            self.evaluate(runner, step=runner.iter + 1)

    def evaluate(self, runner, step: int) -> Dict[str, float]:
        """Evaluate now and log the figures at ``step``; returns them."""
        start = time.time()
        figures = evaluate_on_rank0(runner, self.figures)
        for key, value in figures.items():
            runner.message_hub.update_scalar(key, value)
        runner.visualizer.add_scalars(figures, step=step,
                                      file_path=f'{runner.timestamp}.json')
        runner.logger.info(
            f'Iter(train) [{step}/{runner.max_iters}]  ' + '  '.join(
                f'{k}: {v:.2f}' for k, v in figures.items()) +
            f'  ({self.describe()}{time.time() - start:.0f} s)')
        return figures
