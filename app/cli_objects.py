"""``hra objects sweep``: one housekeeping pass by hand (``app.services.housekeeping``; the workers run it
periodically): finish interrupted speaker erasures, then delete the objects no row refers to."""

from __future__ import annotations

import argparse

from app.settings import Settings


def cmd_objects_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from app.container import build_services
    from app.services.housekeeping import (
        finish_interrupted_erasures,
        sweep_orphan_objects,
    )

    services = build_services(settings)
    finished = [] if args.dry_run else finish_interrupted_erasures(services)
    report = sweep_orphan_objects(services, args.grace_seconds, dry_run=args.dry_run)
    print(f"interrupted speaker erasures finished: {len(finished)}")
    print(report.summary())
    for key in report.orphans:
        print(("would delete " if args.dry_run else "deleted ") + key)
    return 0


def add_object_commands(sub: argparse._SubParsersAction) -> None:
    objects = sub.add_parser("objects", help="object store housekeeping")
    objects_sub = objects.add_subparsers(dest="objects_command", required=True)
    sweep = objects_sub.add_parser(
        "sweep", help="finish interrupted speaker erasures; delete objects no row refers to, older than the grace"
    )
    sweep.add_argument(
        "--grace-seconds", type=float, default=None,
        help="only objects last written longer ago than this (default: HRA_ORPHAN_GRACE_SECONDS, 3600)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    sweep.set_defaults(func=cmd_objects_sweep)
