"""The adaptation job state machine, as pure functions.

    queued -> training -> evaluating -> promoted | rejected
    any active state -> failed | cancelled
    training -> queued          (the reaper hands a job whose worker stopped reporting back to the queue)

Terminal states never change. Re-running a stage (a re-delivered task) is not a transition.
"""

from __future__ import annotations

from storage.models import ACTIVE_JOB_STATES, JobState

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.training, JobState.failed, JobState.cancelled}),
    JobState.training: frozenset({JobState.evaluating, JobState.queued, JobState.failed, JobState.cancelled}),
    JobState.evaluating: frozenset({JobState.promoted, JobState.rejected, JobState.failed, JobState.cancelled}),
    JobState.promoted: frozenset(),
    JobState.rejected: frozenset(),
    JobState.failed: frozenset(),
    JobState.cancelled: frozenset(),
}


class InvalidTransition(ValueError):
    def __init__(self, source: JobState, target: JobState) -> None:
        super().__init__(f"a job cannot go from {source.value} to {target.value}")
        self.source = source
        self.target = target


def allowed_transitions(source: JobState) -> frozenset[JobState]:
    return _ALLOWED[source]


def can_transition(source: JobState, target: JobState) -> bool:
    return target in _ALLOWED[source]


def check_transition(source: JobState, target: JobState) -> None:
    """Raise ``InvalidTransition`` unless ``source -> target`` is allowed."""
    if not can_transition(source, target):
        raise InvalidTransition(source, target)


def is_active(state: JobState) -> bool:
    return state in ACTIVE_JOB_STATES


def is_terminal(state: JobState) -> bool:
    return not is_active(state)
