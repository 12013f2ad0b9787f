"""The one owner of job and head state: every write of an ``AdaptationJob`` or a ``Head`` row is made here.

    states       the state machine, pure
    transitions  guarded updates (``transition``, ``fail``, ``heartbeat``) and "last seen"
    requests     what clients ask: create (one active job per speaker), look up, cancel
    runs         what a worker's run writes: claim, store the candidate, promote or reject
    stale        jobs whose worker stopped reporting: requeue or fail (the reaper and ``hra jobs reap``)
    erasure      lineage of erasures: withdraw the heads trained on a deleted utterance, delete a head (both fall
                 back to the newest clean earlier version or the base model), a speaker's jobs and heads
    versions     an operator's manual head changes: promote (roll back to) or retire a version, with who and why

Workers orchestrate (read the plan, call the model through ``app.ml``, call these functions); they never update a
job or head row themselves. Functions flush; the caller's boundary (a request, a worker step) commits.
"""

from app.services.jobs.erasure import (
    Lineage,
    cancel_active_jobs,
    delete_head,
    delete_jobs_and_heads,
    withdraw_heads_trained_on,
)
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
from app.services.jobs.versions import Actor, list_head_events, promote_version, retire_version, rollback_to

__all__ = [
    "Actor",
    "CandidateChanged",
    "CandidateHead",
    "Claim",
    "EvaluationRecord",
    "Lineage",
    "ReapReport",
    "active_job_id",
    "cancel",
    "cancel_active_jobs",
    "check_enough_data",
    "claim_training",
    "create_job",
    "decide",
    "delete_head",
    "delete_jobs_and_heads",
    "fail",
    "get_job",
    "heartbeat",
    "is_stale",
    "last_seen",
    "list_head_events",
    "promote_version",
    "reap_stale_jobs",
    "refresh",
    "requeue_stale",
    "retire_version",
    "rollback_to",
    "stale_jobs",
    "store_candidate",
    "training_budget",
    "transition",
    "withdraw_heads_trained_on",
]
