"""The job state machine as a pure function."""

from __future__ import annotations

import pytest

from app.services.jobs.states import (
    InvalidTransition,
    allowed_transitions,
    can_transition,
    check_transition,
    is_active,
    is_terminal,
)
from storage.models import JobState as S

HAPPY_PATHS = [(S.queued, S.training), (S.training, S.evaluating), (S.evaluating, S.promoted), (S.evaluating, S.rejected)]


@pytest.mark.parametrize("source,target", HAPPY_PATHS)
def test_the_pipeline_moves_forward(source, target):
    assert can_transition(source, target)
    check_transition(source, target)


@pytest.mark.parametrize("source", [S.queued, S.training, S.evaluating])
@pytest.mark.parametrize("target", [S.failed, S.cancelled])
def test_any_active_state_can_fail_or_be_cancelled(source, target):
    assert can_transition(source, target)


@pytest.mark.parametrize("source", [S.promoted, S.rejected, S.failed, S.cancelled])
def test_terminal_states_never_change(source):
    assert is_terminal(source) and not is_active(source)
    assert allowed_transitions(source) == frozenset()
    for target in S:
        with pytest.raises(InvalidTransition):
            check_transition(source, target)


@pytest.mark.parametrize(
    "source,target",
    [(S.queued, S.evaluating), (S.queued, S.promoted), (S.training, S.promoted), (S.evaluating, S.training),
     (S.evaluating, S.queued), (S.queued, S.queued), (S.training, S.training)],
)
def test_skipping_or_going_back_is_refused(source, target):
    assert not can_transition(source, target)
    with pytest.raises(InvalidTransition, match=f"from {source.value} to {target.value}"):
        check_transition(source, target)


def test_the_reaper_may_hand_a_training_job_back_to_the_queue():
    assert can_transition(S.training, S.queued)


def test_every_state_has_an_entry():
    for state in S:
        allowed_transitions(state)
