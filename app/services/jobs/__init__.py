"""The one owner of job and head state: every write of an ``AdaptationJob`` or a ``Head`` row is made here.

    states       the state machine, pure
    transitions  guarded updates (``transition``, ``fail``, ``heartbeat``) and "last seen"
    requests     what clients ask: create (one active job per speaker), look up, cancel
    runs         what a worker's run writes: claim, store the candidate, promote or reject
    stale        jobs whose worker stopped reporting: requeue or fail (the reaper and ``hra jobs reap``)

Workers orchestrate (read the plan, call the model through ``app.ml``, call these functions); they never update a
job or head row themselves. Functions flush; the caller's boundary (a request, a worker step) commits.
"""

from app.services.jobs.requests import active_job_id, cancel, check_enough_data, create_job, get_job, training_budget
from app.services.jobs.runs import (
    CandidateChanged,
    CandidateHead,
    Claim,
    EvaluationRecord,
    claim_training,
    decide,
    store_candidate,
)
from app.services.jobs.stale import ReapReport, reap_stale_jobs, requeue_stale, stale_jobs
from app.services.jobs.transitions import fail, heartbeat, is_stale, last_seen, refresh, transition

__all__ = [
    "CandidateChanged",
    "CandidateHead",
    "Claim",
    "EvaluationRecord",
    "ReapReport",
    "active_job_id",
    "cancel",
    "check_enough_data",
    "claim_training",
    "create_job",
    "decide",
    "fail",
    "get_job",
    "heartbeat",
    "is_stale",
    "last_seen",
    "reap_stale_jobs",
    "refresh",
    "requeue_stale",
    "stale_jobs",
    "store_candidate",
    "training_budget",
    "transition",
]
