"""tests/conftest.py's autouse fixtures: a test leaves mmengine's default
scope and ``ManagerMixin`` instances as it found them, and a module-scoped
fixture's stay for the module's tests.

The first two tests each change the state and check that the other's
change is gone: in either order the second one fails if the first one's
change outlived it."""
import pytest
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.visualization import Visualizer

from mrcl_testing import mmengine_state_restored

LEFT_SCOPE = 'a default scope a test left'
LEFT_HUB = 'a message hub a test left'


def nothing_left_by_the_other_test():
    assert not DefaultScope.check_instance_created(LEFT_SCOPE)
    current = DefaultScope.get_current_instance()
    assert current is None or current.scope_name != 'mmdet'
    assert not MessageHub.check_instance_created(LEFT_HUB)


def test_a_changed_default_scope_is_restored_after_the_test():
    nothing_left_by_the_other_test()
    DefaultScope.get_instance(LEFT_SCOPE, scope_name='mmdet')
    assert DefaultScope.get_current_instance().scope_name == 'mmdet'


def test_a_new_message_hub_is_removed_after_the_test():
    nothing_left_by_the_other_test()
    MessageHub.get_instance(LEFT_HUB)
    assert MessageHub.get_current_instance().instance_name == LEFT_HUB


@pytest.fixture(scope='module')
def module_runner_state():
    """What a module-scoped fixture that builds a Runner leaves: the run's
    default scope and message hub."""
    DefaultScope.get_instance('a module fixture', scope_name='mmseg')
    return MessageHub.get_instance('a module fixture')


@pytest.mark.parametrize('use', [1, 2])
def test_a_module_fixtures_state_lasts_for_its_tests(module_runner_state,
                                                     use):
    """Set up before the function-scoped restore, it is part of what each
    test starts from: the second use finds it as the first did."""
    assert DefaultScope.get_current_instance().scope_name == 'mmseg'
    assert MessageHub.get_instance('a module fixture') is module_runner_state
    init_default_scope('mmpretrain')  # and a test changes it for itself


def test_the_restore_removes_every_kind_of_instance_and_keeps_the_current():
    classes = (DefaultScope, MessageHub, MMLogger, Visualizer)
    MessageHub.get_instance('made before')
    before = {cls: list(cls._instance_dict.items()) for cls in classes}
    current_hub = MessageHub.get_current_instance()
    with mmengine_state_restored():
        init_default_scope('mmdet')
        for cls in (MessageHub, MMLogger, Visualizer):
            cls.get_instance('made inside')
        with DefaultScope.overwrite_default_scope('mmseg'):
            pass  # replaces DefaultScope's dict with deep copies
        assert MessageHub.get_current_instance().instance_name == \
            'made inside'
    for cls in classes:
        assert list(cls._instance_dict.items()) == before[cls], cls.__name__
    assert MessageHub.get_current_instance() is current_hub
