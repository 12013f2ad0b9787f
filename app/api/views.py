"""ORM rows -> response bodies (the few that need more than ``from_attributes``).

The ``*_out`` functions over lists fetch what the rows need in a fixed number of queries, whatever the number
of rows (never a query per row).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.schemas import EvaluationOut, HeadOut, JobOut, SpeakerOut, UtteranceCounts
from app.services.heads import evaluations_by_head
from app.services.speakers import summarize_many
from storage.models import AdaptationJob, Evaluation, Head, Speaker


def speakers_out(db: Session, speakers: list[Speaker]) -> list[SpeakerOut]:
    summaries = summarize_many(db, [s.id for s in speakers])
    return [
        SpeakerOut(
            id=speaker.id,
            external_id=speaker.external_id,
            display_name=speaker.display_name,
            created_at=speaker.created_at,
            utterances=UtteranceCounts(train=summary.train_utterances, eval=summary.eval_utterances),
            enrolled_seconds=round(summary.enrolled_seconds, 3),
            in_service_head_id=summary.in_service_head_id,
            active_job_id=summary.active_job_id,
        )
        for speaker, summary in ((s, summaries[s.id]) for s in speakers)
    ]


def speaker_out(db: Session, speaker: Speaker) -> SpeakerOut:
    return speakers_out(db, [speaker])[0]


def evaluation_out(evaluation: Evaluation | None) -> EvaluationOut | None:
    return EvaluationOut.model_validate(evaluation) if evaluation is not None else None


def job_out(job: AdaptationJob) -> JobOut:
    data = {name: getattr(job, name) for name in JobOut.model_fields if name != "evaluation"}
    data["budget"] = dict(job.budget or {})
    return JobOut(**data, evaluation=evaluation_out(job.evaluation))


def head_out(head: Head, evaluation: Evaluation | None) -> HeadOut:
    data = {name: getattr(head, name) for name in HeadOut.model_fields if name != "evaluation"}
    data["train_utterance_ids"] = list(head.train_utterance_ids or [])
    data["train_metrics"] = dict(head.train_metrics or {})
    return HeadOut(**data, evaluation=evaluation_out(evaluation))


def heads_out(db: Session, heads: list[Head]) -> list[HeadOut]:
    evaluations = evaluations_by_head(db, [h.id for h in heads])
    return [head_out(h, evaluations.get(h.id)) for h in heads]
