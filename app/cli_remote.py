"""The ``hra`` verbs that work against a running server over HTTP (``app.client``), from any machine:

    hra enroll DIR --speaker NAME        upload a folder of recordings + transcripts; re-running skips what is stored
    hra adapt SPEAKER [--wait]           start an adaptation; --wait shows live progress, then the gate's decision
    hra heads list|download SPEAKER      head versions; download one (default: the one in service)
    hra transcribe FILE [--speaker NAME] [--format text|json|srt|vtt]
    hra speakers list

Server and key: ``--url``/``--api-key``, else ``HRA_URL``/``HRA_API_KEY``, else ``~/.config/hra/config.toml``
(``--config`` points elsewhere). SPEAKER/NAME is a speaker's external_id or id.

Exit status: 0 done (for ``adapt --wait``: promoted), 1 an error, 2 a usage or configuration error,
3 ``adapt --wait`` ended rejected, 4 it ended failed or cancelled, 130 interrupted (the job goes on).
There is no rollback verb: the API has no route to promote or retire a head version yet.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.cli_progress import FileProgress, JobProgress, decision_table, heads_table, speakers_table
from app.client import errors
from app.client.api import HRAClient
from app.client.audio import audio_duration_s
from app.client.config import resolve_config
from app.client.enrollment import STATE_FILE, EnrollmentState, enroll, plan_enrollment
from app.client.formats import FALLBACK_END_S, FORMATS, render
from app.client.models import Head

EXIT_ERROR, EXIT_USAGE, EXIT_REJECTED, EXIT_FAILED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
REMOTE_VERBS = ("enroll", "adapt", "heads", "transcribe", "speakers")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> HRAClient:
    config = resolve_config(args.url, args.api_key, args.config)
    if not config.api_key:
        raise errors.ConfigError(
            "no API key: pass --api-key, set HRA_API_KEY, or put api_key in ~/.config/hra/config.toml"
        )
    return HRAClient.from_config(config)


# ---- verbs -------------------------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace) -> int:
    plan = plan_enrollment(args.directory, args.transcripts)
    for name in plan.missing_audio:
        _say(f"warning: no audio file for {name!r} (listed in the transcripts file)")
    for name, same in plan.duplicates:
        _say(f"note: {name!r} has the same content as {same!r}; enrolled once")
    if plan.unlisted_audio:
        _say(f"note: {len(plan.unlisted_audio)} audio file(s) have no transcript and are left out")
    state = EnrollmentState(Path(args.state) if args.state else Path(args.directory) / STATE_FILE)
    with _client(args) as client:
        speaker, created = client.ensure_speaker(args.speaker, args.display_name)
        _say(f"speaker {args.speaker} ({speaker.id}): {'created' if created else 'exists'}")
        bar = FileProgress(len(plan.items))
        try:
            report = enroll(client, speaker.id, plan, state, on_outcome=bar.advance)
        finally:
            bar.close()
        speaker = client.get_speaker(speaker.id)
    for outcome in report.failed:
        assert outcome.error is not None
        _say(f"failed: {outcome.item.name}: {outcome.error.code}: {outcome.error.message}")
    print(
        f"uploaded {report.count('uploaded')}, already stored {report.count('stored') + report.count('matched')}, "
        f"failed {len(report.failed)}; speaker {args.speaker} has {speaker.utterances.train} train + "
        f"{speaker.utterances.eval} held-out utterances, {speaker.enrolled_seconds / 60:.1f} min"
    )
    return EXIT_ERROR if report.failed or plan.missing_audio else 0


def cmd_adapt(args: argparse.Namespace) -> int:
    with _client(args) as client:
        speaker = client.resolve_speaker(args.speaker)
        try:
            job = client.start_adaptation(speaker.id, args.head_type, args.max_train_seconds, args.max_epochs)
            _say(f"job {job.id} queued ({job.head_type} head for speaker {args.speaker})")
        except errors.Conflict as exc:
            # Waiting is resumable: re-running `adapt --wait` after Ctrl-C follows the job already running.
            active = client.get_speaker(speaker.id).active_job_id
            if exc.code != "job_already_active" or not args.wait or active is None:
                raise
            job = client.get_job(active)
            _say(f"speaker {args.speaker} already has job {job.id} ({job.state}); following it")
        if not args.wait:
            print(job.id)
            return 0
        progress = JobProgress()
        try:
            job = client.wait_for_job(job.id, progress.update, args.poll_interval, args.timeout)
        except KeyboardInterrupt:
            progress.close()
            _say(f"stopped waiting; job {job.id} goes on (follow it again: hra adapt {args.speaker} --wait)")
            return EXIT_INTERRUPTED
        finally:
            progress.close()
    if args.json:
        print(job.model_dump_json(indent=2))
    else:
        print(decision_table(job), end="")
    return {"promoted": 0, "rejected": EXIT_REJECTED}.get(job.state, EXIT_FAILED)


def cmd_heads_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        heads = client.list_heads(client.resolve_speaker(args.speaker).id)
    if args.json:
        print(json.dumps([h.model_dump(mode="json") for h in heads], indent=2))
    else:
        print(heads_table(heads), end="")
    return 0


def _chosen_head(client: HRAClient, speaker_ref: str, version: int | None) -> Head:
    """The speaker's head ``version``, or the one in service when ``version`` is None."""
    heads = client.list_heads(client.resolve_speaker(speaker_ref).id)
    if version is not None:
        chosen = next((h for h in heads if h.version == version), None)
        missing = f"speaker {speaker_ref} has no head version {version}"
    else:
        chosen = next((h for h in heads if h.status == "in_service"), None)
        missing = f"speaker {speaker_ref} has no head in service (pick one with --version)"
    if chosen is None:
        raise errors.NotFound(404, "head_not_found", missing)
    return chosen


def cmd_heads_rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        head = client.promote_head(_chosen_head(client, args.speaker, args.version).id, args.reason)
    print(f"version {head.version} of {args.speaker} is in service")
    return 0


def cmd_heads_retire(args: argparse.Namespace) -> int:
    with _client(args) as client:
        head = client.retire_head(_chosen_head(client, args.speaker, None).id, args.reason)
    print(f"version {head.version} of {args.speaker} is out of service; the speaker gets the base model")
    return 0


def cmd_heads_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        chosen = _chosen_head(client, args.speaker, args.version)
        path = client.download_head(chosen.id, args.output or Path.cwd())
    print(path)
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise errors.ConfigError(f"{path} is not a file")
    with _client(args) as client:
        speaker_id = client.resolve_speaker(args.speaker).id if args.speaker else None
        result = client.transcribe(path, speaker_id)
    duration = audio_duration_s(path) if args.format in ("srt", "vtt", "json") else None
    if duration is None and args.format in ("srt", "vtt"):
        _say(f"warning: cannot read the duration of {path.name} here; the cue ends at {FALLBACK_END_S:.0f} s")
    sys.stdout.write(render(result, args.format, duration_s=duration, source=path.name, speaker_id=speaker_id))
    return 0


def cmd_speakers_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        speakers = client.list_speakers()
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in speakers], indent=2))
    else:
        print(speakers_table(speakers), end="")
    return 0


# ---- running a verb ----------------------------------------------------------------------------------------


def run_remote(args: argparse.Namespace) -> int:
    """Run a remote verb; the client's typed errors become a one-line message and an exit status."""
    if args.log_level != "DEBUG":  # httpx logs every request at INFO: noise between the progress lines
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.remote_func(args) or 0)
    except errors.ConfigError as exc:
        _say(f"hra: {exc}")
        return EXIT_USAGE
    except errors.Unauthorized as exc:
        _say(f"hra: {exc.message} (the key comes from --api-key, HRA_API_KEY or the config file)")
        return EXIT_ERROR
    except errors.ApiError as exc:
        _say(f"hra: {exc.code}: {exc.message} (HTTP {exc.status})")
        return EXIT_ERROR
    except errors.TransportError as exc:
        _say(f"hra: cannot reach the server: {exc} (is it running? the URL comes from --url, HRA_URL or the config)")
        return EXIT_ERROR
    except errors.HRAClientError as exc:  # JobWaitTimeout, ArtifactIntegrityError
        _say(f"hra: {exc}")
        return EXIT_ERROR
    except OSError as exc:  # a local file: unreadable audio, a state file in a read-only folder (see --state)
        _say(f"hra: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:  # what is stored stays stored: enroll resumes, adapt --wait follows the job again
        _say("hra: interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED


def _remote(parser: argparse.ArgumentParser, func) -> argparse.ArgumentParser:
    parser.set_defaults(func=None, remote_func=func)
    return parser


def add_remote_verbs(sub: argparse._SubParsersAction) -> None:
    """Register the remote verbs on ``hra``'s subcommand parser (``app.cli.build_parser``)."""
    server = argparse.ArgumentParser(add_help=False)
    group = server.add_argument_group("server")
    group.add_argument("--url", default=None, help="the API's base URL (default: HRA_URL, config file, 127.0.0.1:8000)")
    group.add_argument("--api-key", default=None, help="default: HRA_API_KEY, then the config file")
    group.add_argument("--config", default=None, help="config file (default: HRA_CONFIG or ~/.config/hra/config.toml)")
    group.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper, help=argparse.SUPPRESS)

    enroll_p = _remote(sub.add_parser(
        "enroll", parents=[server], help="upload a folder of recordings (resumable)",
        description="Folder: audio files + transcripts.tsv (name<TAB>text[<TAB>train|eval]) or metadata.csv "
        "(LJSpeech: name|text). Re-running skips what the server holds (state in DIR/.hra-enroll.json).",
    ), cmd_enroll)
    enroll_p.add_argument("directory")
    enroll_p.add_argument("--speaker", required=True, help="external_id; the speaker is created if missing")
    enroll_p.add_argument("--display-name", default=None, help="for a new speaker (default: --speaker)")
    enroll_p.add_argument("--transcripts", default=None, help="transcripts file (default: found in DIR)")
    enroll_p.add_argument("--state", default=None, help=f"state file (default: DIR/{STATE_FILE})")

    adapt = _remote(sub.add_parser("adapt", parents=[server], help="train and gate a new head version"), cmd_adapt)
    adapt.add_argument("speaker", help="external_id or id")
    adapt.add_argument("--head-type", choices=["linear", "ffn"], default="linear")
    adapt.add_argument("--max-train-seconds", type=float, default=None, help="training budget (server default)")
    adapt.add_argument("--max-epochs", type=int, default=None)
    adapt.add_argument("--wait", action="store_true", help="follow the job live, then show the gate's decision")
    adapt.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls (default 1)")
    adapt.add_argument("--timeout", type=float, default=None, help="stop waiting after this many seconds")
    adapt.add_argument("--json", action="store_true", help="print the final job as JSON")

    heads = sub.add_parser("heads", help="a speaker's head versions")
    heads_sub = heads.add_subparsers(dest="heads_command", required=True)
    listing = _remote(heads_sub.add_parser("list", parents=[server], help="versions, status, WERs"), cmd_heads_list)
    listing.add_argument("speaker")
    listing.add_argument("--json", action="store_true")
    download = _remote(
        heads_sub.add_parser("download", parents=[server], help="a safetensors file"), cmd_heads_download
    )
    download.add_argument("speaker")
    download.add_argument("--version", type=int, default=None, help="default: the head in service")
    download.add_argument("-o", "--output", default=None, help="file or directory (default: current directory)")

    rollback = _remote(heads_sub.add_parser(
        "rollback", parents=[server], help="put an earlier version in service (recorded with the reason)"
    ), cmd_heads_rollback)
    rollback.add_argument("speaker")
    rollback.add_argument("--version", type=int, required=True, help="the version to put in service")
    rollback.add_argument("--reason", required=True, help="why (kept with the change, with who asked)")
    retire = _remote(heads_sub.add_parser(
        "retire", parents=[server], help="take the version in service out (back to the base model)"
    ), cmd_heads_retire)
    retire.add_argument("speaker")
    retire.add_argument("--reason", required=True, help="why (kept with the change, with who asked)")

    transcribe = _remote(sub.add_parser("transcribe", parents=[server], help="transcribe a file"), cmd_transcribe)
    transcribe.add_argument("file")
    transcribe.add_argument("--speaker", default=None, help="with this speaker's head in service (default: base)")
    transcribe.add_argument("--format", choices=FORMATS, default="text")

    speakers = sub.add_parser("speakers", help="speakers of this API key's tenant")
    speakers_sub = speakers.add_subparsers(dest="speakers_command", required=True)
    listed = _remote(speakers_sub.add_parser("list", parents=[server], help="all speakers"), cmd_speakers_list)
    listed.add_argument("--json", action="store_true")
