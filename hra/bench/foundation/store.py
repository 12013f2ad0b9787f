"""The results store: every finished measurement, keyed by what it depends on, so that runs resume and merge."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path


class ResultStore:
    """Append-only JSONL of finished measurements, keyed so that a changed setup is measured again."""

    def __init__(self, path: Path, imports: Sequence[Path] = ()) -> None:
        """``imports``: other runs' results.jsonl (another machine, another process, a committed file); what they
        hold and this store lacks, or holds only without a gate decision, is copied into it, so runs over voice
        subsets merge into one."""
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            self.records.update(self._read(path))
        for other in imports:
            for key, record in self._read(Path(other)).items():
                mine = self.records.get(key)
                # a measurement with a gate decision supersedes one of the same key without (see --regate)
                if mine is None or ("gate" in record and "gate" not in mine):
                    self.put(record)

    @staticmethod
    def _read(path: Path) -> dict[str, dict]:
        records = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["key"]] = record
        return records

    @staticmethod
    def key(**parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.records[record["key"]] = record
        return record
