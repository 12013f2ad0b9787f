"""The report as a table for the terminal."""

from __future__ import annotations

from hra.bench.foundation.options import SYSTEMS


def format_table(report: dict) -> str:
    lines = []
    systems = [s.name for s in SYSTEMS]
    sizes = sorted({int(k.rsplit("_", 1)[1]) for v in report["per_voice"].values() for k in v["systems"]})
    header = f"{'voice':25s} {'':4s} {'n':>4s} {'base':>6s} " + " ".join(f"{s:>11s}" for s in systems)
    lines.append("WER on held-out utterances (every error counted); 'FAIL' marks voices the base fails")
    lines.append(header)
    for voice, entry in report["per_voice"].items():
        if "base_wer" not in entry:
            continue
        flag = "FAIL" if entry.get("fails") else ""
        for size in sizes:
            cells = []
            for s in systems:
                r = entry["systems"].get(f"{s}_{size}")
                cells.append(f"{'-':>11s}" if r is None or "wer" not in r else f"{r['wer']:11.3f}")
            if all(c.strip() == "-" for c in cells):
                continue
            lines.append(f"{voice[:25]:25s} {flag:4s} {size:4d} {entry['base_wer']:6.3f} " + " ".join(cells))
        if not any(f"{s}_{size}" in entry["systems"] for s in systems for size in sizes):
            lines.append(f"{voice[:25]:25s} {flag:4s} {'':4s} {entry['base_wer']:6.3f}")
    lines.append("")
    lines.append(f"{'system @ size':22s} {'median rel. red.':>16s} {'worst':>7s} {'params':>10s} {'bytes':>11s} "
                 f"{'ref. s':>8s} {'epochs':>6s} {'promoted':>8s} {'worst served':>12s}")
    for key, s in report["per_system"].items():
        med = s["median_rel_wer_reduction_failing"]
        served = s.get("worst_served_rel_wer_reduction_all")
        lines.append(f"{key:22s} {('%.3f' % med) if med is not None else 'n/a':>16s} "
                     f"{s['worst_rel_wer_reduction_all']:7.3f} {s['parameters']:10,d} {s['stored_bytes']:11,d} "
                     f"{s['train_reference_seconds_median']:8.1f} {s['epochs_median']:6.1f} "
                     f"{s.get('promoted_by_gate') or '-':>8s} "
                     f"{('%.3f' % served) if served is not None else '-':>12s}")
    if report.get("real_speech"):
        rs = report["real_speech"]
        lines.append("")
        lines.append(f"real speech ({rs['files']} files): base {rs['base_wer']:.3f}, faster-whisper beam 5 int8 "
                     f"{rs['faster_whisper_beam5_int8_wer']:.3f}")
    lines.append("")
    for name, t in report["targets"].items():
        value = t["value"]
        shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"target {name:48s} {shown:>8s}  {verdict}")
    return "\n".join(lines)
