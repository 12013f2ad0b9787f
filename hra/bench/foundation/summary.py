"""The report of a run: per-system and per-voice numbers, the headline, the targets, and the setup."""

from __future__ import annotations

import platform
import statistics
from dataclasses import asdict

import torch

from hra.baselines import DEFAULT_LEARNING_RATES
from hra.bench.foundation.options import FAIL_THRESHOLD, HEADLINE_SIZE, STANDARD_SIZE, SYSTEMS, BenchOptions
from hra.bench.foundation.scoring import reference_seconds, rel_reduction
from hra.bench.foundation.variants import Foundations, context_label
from hra.bench.speed import REFERENCE_MACHINE, REFERENCE_STEP_SECONDS
from hra.training.controller import cpu_name


def summarize(
    options: BenchOptions,
    foundations: Foundations,
    records: list[dict],
    real: dict | None,
    product: dict[str, str] | None = None,
) -> dict:
    """Headline numbers. "linear"/"ffn" are the heads as the product trains them (``product``: the init that
    ``HeadTrainingOptions`` defaults to); the controller ablations compare zero-started linear heads."""
    product = product or {"linear": "linear_zero", "ffn": "ffn_zero"}
    m = Measurements(options, records)
    per_system = per_system_summary(options, m)
    headline = {
        **_headline_numbers(m, per_system, real, product),
        **_headline_context(m, per_system, product),
        **_headline_served(m, per_system, product),
        **_headline_run(options, foundations, m, per_system, product),
    }
    return {
        "description": _description(),
        "headline": headline,
        "targets": targets(headline),
        "systems": {s.name: asdict(s) for s in SYSTEMS},
        "per_system": per_system,
        "per_voice": per_voice_summary(m),
        "failing_voices": m.failing,
        "handled_new_speaker_voices": m.handled,
        "real_speech": real_speech_summary(real),
        "examples": _examples(records),
        "setup": setup_summary(options, foundations, m),
    }


def _description() -> str:
    """The benchmark's description (the package's docstring), kept with every report."""
    import hra.bench.foundation

    return hra.bench.foundation.__doc__


class Measurements:
    """A run's records, indexed: the served base per voice, the measured (not skipped) systems, the voice groups
    (new-speaker voices with a base; those the base fails, capped WER above ``FAIL_THRESHOLD``; the others)."""

    def __init__(self, options: BenchOptions, records: list[dict]) -> None:
        self.records = records
        self.base = {r["voice"]: r for r in records if r["kind"] == "base"}
        self.systems = [r for r in records if r["kind"] == "system" and "skipped" not in r]
        self.new_voices = [v for v in options.voices if v in self.base]
        self.failing = [v for v in self.new_voices if self.base[v]["wer_capped"] > FAIL_THRESHOLD]
        self.handled = [v for v in self.new_voices if v not in self.failing]
        self.standard = list(options.standard_voices)

    def wer(self, voice: str, size: int, system: str) -> float | None:
        for r in self.systems:
            if r["voice"] == voice and r["size"] == size and r["system"] == system:
                return r["wer"]
        return None

    def served_wer(self, voice: str, size: int, system: str) -> float | None:
        """What the speaker gets: the system if the product's gate promoted it, else the base (None: not gated)."""
        for r in self.systems:
            if r["voice"] == voice and r["size"] == size and r["system"] == system and "gate" in r:
                return r["wer"] if r["gate"]["decision"] == "promote" else self.base[voice]["wer"]
        return None

    def reductions(self, voices: list[str], size: int, system: str, served: bool = False) -> list[float]:
        out = []
        for v in voices:
            w = (self.served_wer if served else self.wer)(v, size, system)
            if w is not None:
                out.append(rel_reduction(self.base[v]["wer"], w))
        return out

    def promoted(self, voices: list[str], size: int, system: str) -> str | None:
        gated = [r for r in self.systems if r["voice"] in voices and r["size"] == size and r["system"] == system
                 and "gate" in r]
        if not gated:
            return None
        return f"{sum(r['gate']['decision'] == 'promote' for r in gated)}/{len(gated)}"

    def ratio_to(self, system_a: str, system_b: str, size: int = HEADLINE_SIZE) -> float | None:
        """Median over the failing voices of (WER a - WER b) / WER b."""
        vals = []
        for v in self.failing:
            a, b = self.wer(v, size, system_a), self.wer(v, size, system_b)
            if a is not None and b is not None and b > 0:
                vals.append((a - b) / b)
        return _median(vals)

    def gain_over(self, better: str, worse: str, size: int = HEADLINE_SIZE) -> float | None:
        """Median relative WER gain of ``better`` over ``worse``: the median of -(a - b) / b."""
        ratio = self.ratio_to(better, worse, size)
        return None if ratio is None else -ratio

    def params(self, system: str) -> int | None:
        for r in self.systems:
            if r["system"] == system:
                return r["parameters"]
        return None

    def standard_reductions(self, system: str) -> list[float]:
        """Relative WER reductions of ``system`` at ``STANDARD_SIZE`` on the standard voices (not gated)."""
        return [rel_reduction(self.base[v]["wer"], w) for v in self.standard if v in self.base
                if (w := self.wer(v, STANDARD_SIZE, system)) is not None]


def per_system_summary(options: BenchOptions, m: Measurements) -> dict[str, dict]:
    """Per system and size, over the new-speaker voices: reductions (failing voices' median, every voice's worst),
    what the gate promoted and what speakers are served, cost."""
    per_system: dict[str, dict] = {}
    for size in options.sizes:
        for name in options.systems_by_size.get(size, ()):
            red_fail = m.reductions(m.failing, size, name)
            red_all = m.reductions(m.new_voices, size, name)
            if not red_all:
                continue
            rows = [r for r in m.systems if r["size"] == size and r["system"] == name and r["voice"] in m.new_voices]
            per_system[f"{name}_{size}"] = {
                "system": name, "size": size, "voices": len(red_all),
                "median_rel_wer_reduction_failing": _median(red_fail),
                "worst_rel_wer_reduction_all": min(red_all),
                "promoted_by_gate": m.promoted(m.new_voices, size, name),
                "median_served_rel_wer_reduction_failing": _median(m.reductions(m.failing, size, name, served=True)),
                "worst_served_rel_wer_reduction_all": _min_or_none(m.reductions(m.new_voices, size, name,
                                                                                served=True)),
                "median_wer": _median([r["wer"] for r in rows]),
                "parameters": rows[0]["parameters"], "stored_bytes": rows[0]["stored_bytes"],
                "train_seconds_median": _median([r["train_seconds"] for r in rows]),
                "train_reference_seconds_median": _median([reference_seconds(r) for r in rows]),
                "epochs_median": _median([r["epochs"] for r in rows]),
            }
    return per_system


def _failing_median(per_system: dict[str, dict], key: str) -> float | None:
    return per_system.get(key, {}).get("median_rel_wer_reduction_failing")


def _headline_numbers(m: Measurements, per_system: dict[str, dict], real: dict | None, product: dict[str, str]) -> dict:
    """The numbers the targets are about."""
    lin_sys, ffn_sys = product["linear"], product["ffn"]
    std_base = [m.base[v] for v in m.standard if v in m.base]
    base_wer_standard = (sum(r["errors"] for r in std_base) / sum(r["words"] for r in std_base)) if std_base else None
    lin, res = m.params(lin_sys), m.params("houlsby")
    s50 = per_system.get(f"{lin_sys}_{HEADLINE_SIZE}", {})
    return {
        "base_wer_standard_voices": base_wer_standard,
        "median_rel_wer_reduction_linear_50": _failing_median(per_system, f"{lin_sys}_50"),
        "median_rel_wer_reduction_ffn_50": _failing_median(per_system, f"{ffn_sys}_50"),
        "worst_rel_wer_reduction_linear_50": per_system.get(f"{lin_sys}_50", {}).get("worst_rel_wer_reduction_all"),
        "param_ratio_linear_vs_residual": (lin / res) if lin and res else None,
        "train_seconds_linear_50": s50.get("train_seconds_median"),
        "train_reference_seconds_linear_50": s50.get("train_reference_seconds_median"),
        "controller_vs_random_rel_gain": m.gain_over("linear_zero", "hra_random"),
        "base_wer_real_speech": real["base"]["wer"] if real else None,
        "faster_whisper_wer_real_speech": real["faster_whisper_beam5_int8"]["wer"] if real else None,
    }


def _headline_context(m: Measurements, per_system: dict[str, dict], product: dict[str, str]) -> dict:
    """Context for the targets: the other inits and baselines, all new-speaker voices, the controller variants,
    the standard voices."""
    lin_sys, ffn_sys = product["linear"], product["ffn"]
    return {
        "median_rel_wer_reduction_linear_prior_50": _failing_median(per_system, "linear_prior_50"),
        "median_rel_wer_reduction_ffn_prior_50": _failing_median(per_system, "ffn_prior_50"),
        "median_rel_wer_reduction_residual_50": _failing_median(per_system, "houlsby_50"),
        "median_rel_wer_reduction_lora_50": _failing_median(per_system, "lora_50"),
        "median_rel_wer_reduction_full_ft_50": _failing_median(per_system, "full_ft_50"),
        "median_rel_wer_reduction_linear_50_all_new_speaker_voices": _median(
            m.reductions(m.new_voices, HEADLINE_SIZE, lin_sys)),
        "median_rel_wer_reduction_ffn_50_all_new_speaker_voices": _median(
            m.reductions(m.new_voices, HEADLINE_SIZE, ffn_sys)),
        "linear_vs_residual_rel_wer_50": m.ratio_to(lin_sys, "houlsby"),
        "recurrence_rel_gain_50": m.gain_over("linear_zero", "hra_u0"),
        "decoder_layers_rel_gain_50": m.gain_over("hra_decoder", "linear_zero"),
        "worst_rel_wer_reduction_linear_50_standard_voices": _min_or_none(m.standard_reductions(lin_sys)),
        "worst_rel_wer_reduction_ffn_50_standard_voices": _min_or_none(m.standard_reductions(ffn_sys)),
    }


def _headline_served(m: Measurements, per_system: dict[str, dict], product: dict[str, str]) -> dict:
    """Served = after the product's promotion gate (a rejected head leaves the speaker on the base)."""
    lin_sys, ffn_sys = product["linear"], product["ffn"]
    lin50, ffn50 = per_system.get(f"{lin_sys}_50", {}), per_system.get(f"{ffn_sys}_50", {})
    return {
        "worst_rel_wer_reduction_linear_50_served": lin50.get("worst_served_rel_wer_reduction_all"),
        "worst_rel_wer_reduction_ffn_50_served": ffn50.get("worst_served_rel_wer_reduction_all"),
        "median_rel_wer_reduction_linear_50_served": lin50.get("median_served_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_ffn_50_served": ffn50.get("median_served_rel_wer_reduction_failing"),
        "promoted_linear_50_new_speaker_voices": m.promoted(m.new_voices, HEADLINE_SIZE, lin_sys),
        "promoted_linear_50_failing_voices": m.promoted(m.failing, HEADLINE_SIZE, lin_sys),
        "promoted_linear_50_standard_voices": m.promoted(m.standard, STANDARD_SIZE, lin_sys),
        "worst_rel_wer_reduction_linear_50_standard_voices_served": _min_or_none(
            m.reductions([v for v in m.standard if v in m.base], STANDARD_SIZE, lin_sys, served=True)),
    }


def _headline_run(options: BenchOptions, foundations: Foundations, m: Measurements, per_system: dict[str, dict],
                  product: dict[str, str]) -> dict:
    """Which heads the headline means, the zero-started heads, and what the run was."""
    return {
        "headline_heads": f"{product['linear']} / {product['ffn']} (the product's default init)",
        "median_rel_wer_reduction_linear_zero_50": _failing_median(per_system, "linear_zero_50"),
        "median_rel_wer_reduction_ffn_zero_50": _failing_median(per_system, "ffn_zero_50"),
        "failing_voices": len(m.failing),
        "controller": foundations.controller_kind,
        "context": context_label(foundations.trained),
        "quick": options.quick,
    }


def targets(headline: dict) -> dict[str, dict]:
    """The product's targets, each with its value and whether it was met (None: not measured)."""
    return {
        "real_speech_within_0.03_of_faster_whisper": _check(
            headline["base_wer_real_speech"], lambda x: x <= headline["faster_whisper_wer_real_speech"] + 0.03),
        "median_rel_wer_reduction_linear_50_>=_0.50": _check(headline["median_rel_wer_reduction_linear_50"],
                                                             lambda x: x >= 0.50),
        "median_rel_wer_reduction_ffn_50_>=_0.60": _check(headline["median_rel_wer_reduction_ffn_50"],
                                                          lambda x: x >= 0.60),
        "no_new_speaker_voice_worse_linear_50": _check(headline["worst_rel_wer_reduction_linear_50"],
                                                       lambda x: x >= 0),
        "no_standard_voice_worse_linear_50": _check(
            headline["worst_rel_wer_reduction_linear_50_standard_voices"], lambda x: x >= 0),
        "no_new_speaker_voice_worse_linear_50_served": _check(
            headline["worst_rel_wer_reduction_linear_50_served"], lambda x: x >= 0),
        "no_standard_voice_worse_linear_50_served": _check(
            headline["worst_rel_wer_reduction_linear_50_standard_voices_served"], lambda x: x >= 0),
        "controller_vs_random_rel_gain_>=_0.10": _check(headline["controller_vs_random_rel_gain"],
                                                        lambda x: x >= 0.10),
        "param_ratio_linear_vs_residual_<=_0.125": _check(headline["param_ratio_linear_vs_residual"],
                                                          lambda x: x <= 0.125),
        "linear_wer_within_10pct_of_residual": _check(headline["linear_vs_residual_rel_wer_50"], lambda x: x <= 0.10),
        "train_seconds_linear_50_<=_60": _check(headline["train_seconds_linear_50"], lambda x: x <= 60),
    }


_SYSTEM_FIELDS = ("wer", "wer_capped", "parameters", "stored_bytes", "train_seconds", "eval_seconds", "epochs",
                  "best_epoch", "stopped_by", "holdout_loss", "learning_rate")


def per_voice_summary(m: Measurements) -> dict[str, dict]:
    """Every voice's base and systems ("<system>_<size>"; skipped ones with why; gate decisions)."""
    per_voice: dict[str, dict] = {}
    for r in m.records:
        entry = per_voice.setdefault(r["voice"], {"group": r["group"], "kind": r.get("voice_kind"), "systems": {}})
        if r["kind"] == "base":
            entry.update({"base_wer": r["wer"], "base_wer_capped": r["wer_capped"], "words": r["words"],
                          "fails": r["wer_capped"] > FAIL_THRESHOLD})
        elif "skipped" in r:
            entry["systems"][f"{r['system']}_{r['size']}"] = {"skipped": r["skipped"]}
        else:
            system = entry["systems"][f"{r['system']}_{r['size']}"] = {k: r[k] for k in _SYSTEM_FIELDS}
            system["rel_wer_reduction"] = rel_reduction(m.base[r["voice"]]["wer"], r["wer"])
            if "gate" in r:
                system["gate"] = {k: r["gate"][k] for k in ("decision", "confidence", "base_wer", "candidate_wer")}
    return per_voice


def real_speech_summary(real: dict | None) -> dict | None:
    """The served base against faster-whisper on the real recordings, and the files where they differ."""
    if real is None:
        return None
    return {
        "files": len(real["files"]),
        "base_wer": real["base"]["wer"], "base_seconds": real["base"]["seconds"],
        "faster_whisper_beam5_int8_wer": real["faster_whisper_beam5_int8"]["wer"],
        "faster_whisper_seconds": real["faster_whisper_beam5_int8"]["seconds"],
        "differences": [
            {"file": f, "reference": ref, "base": a, "faster_whisper": b}
            for f, ref, a, b in zip(real["files"], real["references"], real["base"]["hypotheses"],
                                    real["faster_whisper_beam5_int8"]["hypotheses"])
            if a != b
        ],
    }


def setup_summary(options: BenchOptions, foundations: Foundations, m: Measurements) -> dict:
    """What was measured, on what: foundation, recipe, budgets, configurations, voices, machine."""
    calibrated = [r["speed_factor"] for r in m.systems if r.get("speed_factor")]
    return {
        "foundation_fingerprint": foundations.trained.fingerprint,
        "controller": foundations.controller_kind,
        "controller_config": foundations.trained.controller.config.to_dict(),
        "variant_controllers": foundations.variant_kinds,
        "context": context_label(foundations.trained),
        "training": options.training.to_record(),
        "budget": {
            "training_reference_seconds": options.training.max_seconds,
            "reference_machine": REFERENCE_MACHINE, "reference_step_seconds": REFERENCE_STEP_SECONDS,
            "speed_factor_this_run": options.speed_factor,
            "measurements_calibrated": sum(1 for r in m.systems if r.get("speed_factor")),
            "measurements_before_calibration": sum(1 for r in m.systems if not r.get("speed_factor")),
            "speed_factor_range": [min(calibrated), max(calibrated)] if calibrated else None,
        },
        "baseline_learning_rates": DEFAULT_LEARNING_RATES,
        "adapters": {k: options.adapter_config(k).to_dict() for k in ("houlsby", "lora", "full_ft")},
        "voices": list(options.voices), "standard_voices": list(options.standard_voices),
        "sizes": list(options.sizes), "systems_by_size": {str(k): list(v) for k, v in options.systems_by_size.items()},
        "n_eval": options.n_eval, "n_gate": options.n_gate, "fail_threshold_capped_wer": FAIL_THRESHOLD,
        "corpus": str(options.corpus), "seed": options.training.seed,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": options.threads,
                    "cpu": cpu_name()},
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _min_or_none(values: list[float]) -> float | None:
    return min(values) if values else None


def _check(value: float | None, test) -> dict:
    return {"value": value, "met": None if value is None else bool(test(value))}


def _examples(records: list[dict], per_voice: int = 2) -> list[dict]:
    """A few held-out utterances per voice: base and headline systems side by side."""
    out = []
    by_voice: dict[str, dict[str, list[str]]] = {}
    for r in records:
        if "hypotheses" in r and (r["kind"] == "base" or r["size"] == HEADLINE_SIZE):
            by_voice.setdefault(r["voice"], {})[r["system"]] = r["hypotheses"]
    for voice, hyps in by_voice.items():
        for i in range(min(per_voice, len(hyps.get("base", [])))):
            out.append({"voice": voice, "index": i, **{k: v[i] for k, v in hyps.items() if i < len(v)}})
    return out
