"""MODEL_CARD.md's per-voice tables from benchmarks/results/foundation.json (one per enrollment size).

    python benchmarks/model_card_tables.py [benchmarks/results/foundation.json]

A cell is the held-out WER; "(r)" marks a head the product's promotion gate rejected (the speaker keeps the base).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (  # system name in the results -> column title
    ("linear_prior", "linear"), ("ffn_prior", "FFN"), ("linear_zero", "linear, zero init"),
    ("ffn_zero", "FFN, zero init"), ("hra_random", "random controller"), ("hra_u0", "u = 0"),
    ("hra_decoder", "decoder layers too"), ("houlsby", "Houlsby"), ("lora", "LoRA"), ("full_ft", "full FT"),
)


def cell(entry: dict | None) -> str:
    if not entry or "wer" not in entry:
        return ""
    rejected = entry.get("gate", {}).get("decision") == "reject"
    return f"{entry['wer']:.3f}" + (" (r)" if rejected else "")


def table(report: dict, size: int) -> str:
    per_voice = report["per_voice"]
    failing = set(report["failing_voices"])
    columns = [(name, title) for name, title in COLUMNS
               if any(cell(v["systems"].get(f"{name}_{size}")) for v in per_voice.values())]
    order = sorted(per_voice, key=lambda v: (per_voice[v]["group"] == "standard", v not in failing))
    lines = ["| voice | base | " + " | ".join(t for _, t in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for voice in order:
        entry = per_voice[voice]
        cells = [cell(entry["systems"].get(f"{name}_{size}")) for name, _ in columns]
        if not any(cells):
            continue
        label = voice if voice in failing else f"{voice} ({'standard' if entry['group'] == 'standard' else 'handled'})"
        lines.append(f"| {label} | {entry['base_wer']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).parent / "results" / "foundation.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    sizes = sorted({int(k.rsplit("_", 1)[1]) for v in report["per_voice"].values() for k, entry in v["systems"].items()
                    if cell(entry)})  # sizes with a measurement, not only skipped systems
    for size in sizes:
        print(f"At {size} enrollment utterances:\n\n{table(report, size)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
