"""The device benchmark's record as tables for the terminal, and its headline numbers (the last output line)."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_tables(record: dict) -> None:
    rows = list(record.get("train", []))
    print()
    print(f"voice {record['voice']}: {record['n_train']} enrollment / {record['n_eval']} eval utterances")
    for name, base in (record.get("base") or {}).items():
        if base:
            print(f"base model served ({name}): WER {fmt(base['wer'])} (capped {fmt(base['wer_capped'])}), "
                  f"{fmt(base['eval_seconds'], 2)} s for {record['n_eval']} utterances")
    header = f"{'device':6} {'head':6} {'prec':9} {'train s':>8} {'prep s':>7} {'s/step':>7} {'ep':>3} " \
             f"{'steps':>5} {'stop':>14} {'WER':>6} {'capped':>6} {'eval s':>7} {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r:
            continue
        print(f"{r['device']:6} {r['head_type']:6} {r['precision']:9} {fmt(r['train_seconds'], 1):>8} "
              f"{fmt(r['prepare_seconds'], 1):>7} {fmt(r['seconds_per_step'], 3):>7} {r['epochs']:>3} "
              f"{r['steps']:>5} {r['stopped_by']:>14} {fmt(r['wer']):>6} {fmt(r['wer_capped']):>6} "
              f"{fmt(r['eval_seconds'], 2):>7} {fmt(r['train_peak_mib'], 0):>8}")
    later = [r for r in rows if r and r.get("later_jobs")]
    if later:
        print()
        print("same worker process, later jobs (train s): first job = the row above; new speaker = "
              f"{record.get('new_speaker_voice') or '-'} (other batch shapes); repeat = the first voice again")
        for r in later:
            lj = r["later_jobs"]
            new = lj.get("new_speaker") or {}
            print(f"  {r['device']:5} {r['head_type']:6} {r['precision']:9} first {fmt(r['train_seconds'], 1):>6}"
                  f"  new speaker {fmt(new.get('train_seconds'), 1):>6}"
                  f"  repeat {fmt(lj['repeat_same_voice']['train_seconds'], 1):>6}"
                  f"  (worker ready in {fmt(r.get('worker_ready_seconds'), 1)} s)")
    print()
    for name, s in (record.get("serve") or {}).items():
        if not s:
            continue
        enc, txt = s["encoder_batched_vs_alone"], s["transcripts_batched_vs_alone"]
        print(f"serving {name}: batch {s['batch']} ({s['speakers']} speakers mixed), "
              f"utt/s mixed {s['utt_per_s']['mixed_batch']} | one-at-a-time {s['utt_per_s']['one_at_a_time']} | "
              f"one head {s['utt_per_s']['one_head_batch']} (x{s['batched_speedup']} batched); "
              f"batched==alone transcripts {txt['identical']}/{txt['total']}, "
              f"encoder max |diff| {enc['max_abs_diff']:.2e} (rel {enc['max_rel_diff']:.2e})")
        if s.get("sweep_mixed_batch"):
            print("  sweep (batch: utt/s): " + ", ".join(f"{k}: {v['utt_per_s']}"
                                                       for k, v in s["sweep_mixed_batch"].items()))
    cross = record.get("cross_device")
    if cross:
        e, t = cross["encoder_cuda_vs_cpu"], cross["transcripts_cuda_vs_cpu"]
        print(f"cuda vs cpu (mixed batch): transcripts {t['identical']}/{t['total']} identical, "
              f"encoder max |diff| {e['max_abs_diff']:.2e} (rel {e['max_rel_diff']:.2e})")
    for err in record.get("errors", []):
        print(f"ERROR in {err['section']}: {err['error']}")


def headline(record: dict) -> dict:
    h: dict[str, Any] = {"bench": "hra.bench.device", "device": record["environment"]["device"]}
    env = record["environment"]
    if "gpu" in env:
        h["gpu"] = env["gpu"]
    h["cpu"] = env.get("cpu")
    for name, base in (record.get("base") or {}).items():
        if base:
            h[f"base_wer_{name}"] = round(base["wer"], 4)
    for r in record.get("train", []):
        if r:
            key = f"{r['device']}_{r['head_type']}_{r['precision']}"
            h[f"{key}_train_s"] = r["train_seconds"]
            h[f"{key}_epochs"] = r["epochs"]
            h[f"{key}_steps"] = r["steps"]
            h[f"{key}_wer"] = round(r["wer"], 4)
            lj = r.get("later_jobs") or {}
            if lj.get("new_speaker"):
                h[f"{key}_new_speaker_train_s"] = lj["new_speaker"]["train_seconds"]
            if lj.get("repeat_same_voice"):
                h[f"{key}_repeat_train_s"] = lj["repeat_same_voice"]["train_seconds"]
    for name, s in (record.get("serve") or {}).items():
        if s:
            h[f"serve_{name}_mixed_utt_per_s"] = s["utt_per_s"]["mixed_batch"]
            h[f"serve_{name}_single_utt_per_s"] = s["utt_per_s"]["one_at_a_time"]
            h[f"serve_{name}_batched_identical"] = s["transcripts_batched_vs_alone"]["identical"]
            h[f"serve_{name}_encoder_max_abs_diff"] = s["encoder_batched_vs_alone"]["max_abs_diff"]
    h["serve_batch"] = record.get("serve_batch")
    cross = record.get("cross_device")
    if cross:
        h["cuda_vs_cpu_identical"] = cross["transcripts_cuda_vs_cpu"]["identical"]
    h["errors"] = len(record.get("errors", []))
    return h
