"""What the remote CLI verbs show: a live job progress bar, the gate's decision table, tables of heads/speakers.

On a terminal the job's progress is a tqdm bar on stderr; elsewhere (a log, CI, a pipe) it is one line per state
change and per tenth of progress, so a log stays readable. Tables go to stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from tqdm import tqdm

from app.client.enrollment import Outcome
from app.client.models import Evaluation, Head, Job, Speaker


def _steps(job: Job) -> str:
    parts: list[str] = []
    if job.is_finished:
        return ""  # the decision table follows
    if job.state == "queued":
        parts.append("waiting for a worker")
    elif job.state == "evaluating":
        parts.append("held-out WER: base, in service, candidate")
    elif job.step is not None:
        parts.append(f"step {job.step}/{job.total_steps}" if job.total_steps else f"step {job.step}")
    if job.loss is not None and job.state == "training":
        parts.append(f"loss {job.loss:.3f}")
    if job.attempts > 1:
        parts.append(f"attempt {job.attempts}")
    return ", ".join(parts)


class JobProgress:
    """Follows one job: ``update(job)`` after each poll, ``close()`` at the end (also on errors)."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._interactive = self._stream.isatty() if interactive is None else interactive
        self._bar: tqdm | None = None
        self._last_line: tuple[str, int] | None = None

    def update(self, job: Job) -> None:
        percent = round(100 * job.progress)
        if self._interactive:
            if self._bar is None:
                self._bar = tqdm(
                    total=100,
                    file=self._stream,
                    bar_format="{desc:<10} {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
                    dynamic_ncols=True,
                    leave=True,
                )
            self._bar.set_description_str(job.state, refresh=False)
            self._bar.set_postfix_str(_steps(job), refresh=False)
            self._bar.n = percent
            self._bar.refresh()
            return
        line_key = (job.state, percent // 10)
        if line_key != self._last_line:
            self._last_line = line_key
            detail = _steps(job)
            line = f"job {job.id}: {job.state} {percent}%" + (f" ({detail})" if detail else "")
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class FileProgress:
    """Enrollment progress: a bar over the files on a terminal, one line per file elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        interactive = self._stream.isatty()
        self._bar = tqdm(total=total, unit="file", desc="enroll", file=self._stream) if interactive else None

    def advance(self, outcome: Outcome) -> None:
        if outcome.note:
            print(f"note: {outcome.item.name}: {outcome.note}", file=self._stream)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{outcome.action} {outcome.item.name}", refresh=False)
            self._bar.update(1)
        else:
            split = f" ({outcome.utterance.split})" if outcome.utterance else ""
            print(f"{outcome.action}: {outcome.item.name}{split}", file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _wer(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _relative(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f"  ({100 * (value - reference) / reference:+.0f}% vs base)"


def decision_table(job: Job) -> str:
    """The outcome of a finished job: the three WERs, the decision and its reason (or the job's error)."""
    lines = [f"job {job.id}: {job.state}" + (f" (head {job.head_id})" if job.head_id else "")]
    evaluation: Evaluation | None = job.evaluation
    if evaluation is None:
        if job.error:
            lines.append(f"  {'error':<16}{job.error}")
        return "\n".join(lines) + "\n"
    base = evaluation.base_wer
    rows = [
        ("base WER", _wer(base).rjust(6)),
        ("in-service WER", _wer(evaluation.in_service_wer).rjust(6) + _relative(evaluation.in_service_wer, base)),
        ("candidate WER", _wer(evaluation.candidate_wer).rjust(6) + _relative(evaluation.candidate_wer, base)),
        ("held out", f"{evaluation.eval_utterances} utterances, {evaluation.eval_words} words"),
        ("confidence", f"{evaluation.confidence:.2f} that the candidate beats the reference"),
        ("decision", evaluation.decision),
        ("reason", evaluation.reason),
    ]
    lines.extend(f"  {label:<16}{value}" for label, value in rows)
    return "\n".join(lines) + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return "\n".join([render(header), *(render(r) for r in rows)]) + "\n"


def heads_table(heads: Sequence[Head]) -> str:
    if not heads:
        return "no heads yet: enroll, then `hra adapt SPEAKER --wait`\n"
    rows = []
    for head in heads:
        ev = head.evaluation
        rows.append([
            f"v{head.version}",
            head.status,
            head.head_type,
            f"{head.parameters:,}",
            _wer(ev.base_wer) if ev else "-",
            _wer(ev.candidate_wer) if ev else "-",
            ev.decision if ev else "-",
            head.created_at.strftime("%Y-%m-%d %H:%M"),
            head.id,
        ])
    return table(["VERSION", "STATUS", "TYPE", "PARAMS", "BASE WER", "HEAD WER", "GATE", "CREATED (UTC)", "ID"], rows)


def speakers_table(speakers: Sequence[Speaker]) -> str:
    if not speakers:
        return "no speakers yet: `hra enroll DIR --speaker NAME`\n"
    rows = [
        [
            s.external_id or "-",
            s.display_name or "-",
            f"{s.utterances.train}/{s.utterances.eval}",
            f"{s.enrolled_seconds / 60:.1f}",
            "yes" if s.in_service_head_id else "no",
            s.id,
        ]
        for s in speakers
    ]
    return table(["EXTERNAL ID", "NAME", "TRAIN/EVAL", "MINUTES", "HEAD", "ID"], rows)
