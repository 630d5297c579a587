from mmengine.model import is_model_wrapper


def bare_model(runner):
    """The runner's model, out of its DDP (or other) wrapper."""
    return runner.model.module if is_model_wrapper(
        runner.model) else runner.model
