"""The foundation benchmark's bookkeeping: resumable results and the headline numbers (no model is run)."""

import json
from pathlib import Path

import pytest

from hra.bench.foundation.cli import parse_args
from hra.bench.foundation.measure import Bench
from hra.bench.foundation.options import SYSTEMS_BY_NAME, VARIANT_CONTROLLERS, BenchOptions
from hra.bench.foundation.scoring import gate_decision, reference_seconds, rel_reduction
from hra.bench.foundation.store import ResultStore
from hra.bench.foundation.summary import summarize
from hra.bench.foundation.variants import Foundations, variant_controller_argv
from hra.bench.paths import REAL_SPEECH, ROOT


class _Controller:
    class config:  # noqa: N801 - stands in for ControllerConfig
        @staticmethod
        def to_dict():
            return {"d_controller": 64}


class _Foundation:
    fingerprint = "f" * 64
    controller = _Controller()
    backbone = serving_base = object()


def _base(voice, wer, capped, group="new_speaker", words=100):
    return {"kind": "base", "voice": voice, "group": group, "voice_kind": "accented", "size": 0, "system": "base",
            "wer": wer, "wer_capped": capped, "errors": round(wer * words), "words": words}


def _sys(voice, size, system, wer, params, seconds=50.0, group="new_speaker"):
    return {"kind": "system", "voice": voice, "group": group, "voice_kind": "accented", "size": size,
            "system": system, "family": SYSTEMS_BY_NAME[system].family, "wer": wer, "wer_capped": min(wer, 1.0),
            "errors": 0, "words": 100, "parameters": params, "stored_bytes": 4 * params, "train_seconds": seconds,
            "eval_seconds": 10.0, "epochs": 3, "best_epoch": 3, "stopped_by": "time", "holdout_loss": 1.0,
            "learning_rate": 1e-3}


def test_rel_reduction():
    assert rel_reduction(2.0, 0.5) == pytest.approx(0.75)
    assert rel_reduction(0.2, 0.3) == pytest.approx(-0.5)
    assert rel_reduction(0.0, 0.0) == 0.0


def test_result_store_resumes_from_its_jsonl(tmp_path: Path):
    store = ResultStore(tmp_path / "r.jsonl")
    key = ResultStore.key(voice="a", size=50)
    assert store.get(key) is None
    store.put({"key": key, "wer": 0.5})
    assert ResultStore(tmp_path / "r.jsonl").get(key) == {"key": key, "wer": 0.5}
    assert ResultStore.key(voice="a", size=50) == key != ResultStore.key(voice="a", size=20)


def test_result_store_merges_other_runs_without_overwriting_its_own(tmp_path: Path):
    mine, other = tmp_path / "mine.jsonl", tmp_path / "other.jsonl"
    ResultStore(mine).put({"key": "a", "wer": 0.1})
    theirs = ResultStore(other)
    theirs.put({"key": "a", "wer": 0.9})
    theirs.put({"key": "b", "wer": 0.2})
    merged = ResultStore(mine, [other])
    assert merged.get("a") == {"key": "a", "wer": 0.1} and merged.get("b") == {"key": "b", "wer": 0.2}
    assert ResultStore(mine).get("b") == {"key": "b", "wer": 0.2}  # written through: the merge persists
    assert len(mine.read_text().splitlines()) == 2


def test_a_gated_measurement_supersedes_an_ungated_one_of_the_same_key(tmp_path: Path):
    seeded, regated = tmp_path / "seeded.jsonl", tmp_path / "regated.jsonl"
    ResultStore(seeded).put({"key": "a", "wer": 0.5})
    ResultStore(regated).put({"key": "a", "wer": 0.4, "gate": {"decision": "promote"}})
    merged = ResultStore(tmp_path / "merged.jsonl", [seeded, regated])
    assert merged.get("a")["gate"]["decision"] == "promote"
    again = ResultStore(tmp_path / "again.jsonl", [regated, seeded])  # order does not matter
    assert again.get("a")["wer"] == 0.4


def test_systems_per_size_and_product_head_aliases_parse():
    options = parse_args(["--sizes", "50", "--systems", "linear,houlsby", "--at", "20=linear", "--at", "100=ffn",
                          "--summarize-only"])
    assert options.sizes == (20, 50, 100)
    assert options.systems_by_size == {20: ("linear",), 50: ("linear", "houlsby"), 100: ("ffn",)}
    assert options.measure is False
    with pytest.raises(SystemExit):
        parse_args(["--at", "50=nonsense"])
    with pytest.raises(SystemExit):
        parse_args(["--at", "fifty=linear"])


def test_headline_uses_failing_voices_for_medians_and_all_voices_for_the_worst():
    options = BenchOptions(voices=("v1", "v2", "v3"), standard_voices=("s1",), sizes=(50,),
                           systems_by_size={50: ("linear_zero", "ffn_zero", "houlsby", "hra_random")})
    records = [
        _base("v1", 2.0, 0.9), _base("v2", 1.0, 0.8), _base("v3", 0.2, 0.2),  # v3: the base handles it
        _base("s1", 0.1, 0.1, group="standard", words=200),
        _sys("v1", 50, "linear_zero", 0.5, 100, seconds=40),
        {**_sys("v2", 50, "linear_zero", 0.5, 100, seconds=60), "speed_factor": 2.0},  # 30 reference seconds
        _sys("v3", 50, "linear_zero", 0.3, 100, seconds=50),
        _sys("v1", 50, "ffn_zero", 0.4, 200), _sys("v2", 50, "ffn_zero", 0.4, 200), _sys("v3", 50, "ffn_zero", 0.2, 200),
        _sys("v1", 50, "houlsby", 0.5, 1000), _sys("v2", 50, "houlsby", 0.4, 1000),
        _sys("v1", 50, "hra_random", 1.0, 100), _sys("v2", 50, "hra_random", 0.5, 100),
        _sys("s1", 50, "linear_zero", 0.09, 100, group="standard"),
    ]
    foundations = Foundations(_Foundation(), _Foundation(), {"u0": _Foundation(), "decoder": None}, "trained (test)",
                              {"u0": "u0 (test)", "decoder": "none (test)"})
    real = {"files": ["a"], "references": ["x"],
            "base": {"wer": 0.05, "seconds": 1.0, "hypotheses": ["x"]},
            "faster_whisper_beam5_int8": {"wer": 0.06, "seconds": 1.0, "hypotheses": ["x"]}}
    report = summarize(options, foundations, records, real)
    h = report["headline"]
    assert report["failing_voices"] == ["v1", "v2"]
    assert h["median_rel_wer_reduction_linear_50"] == pytest.approx((0.75 + 0.5) / 2)
    assert h["median_rel_wer_reduction_ffn_50"] == pytest.approx((0.8 + 0.6) / 2)
    assert h["worst_rel_wer_reduction_linear_50"] == pytest.approx(-0.5)  # v3 got worse
    assert h["param_ratio_linear_vs_residual"] == pytest.approx(0.1)
    assert h["train_seconds_linear_50"] == pytest.approx(50)
    assert h["train_reference_seconds_linear_50"] == pytest.approx(40)  # 40, 30, 50
    budget = report["setup"]["budget"]
    assert budget["measurements_calibrated"] == 1 and budget["speed_factor_range"] == [2.0, 2.0]
    assert h["controller_vs_random_rel_gain"] == pytest.approx((0.5 + 0.0) / 2)
    assert h["linear_vs_residual_rel_wer_50"] == pytest.approx((0.0 + 0.25) / 2)
    assert h["base_wer_standard_voices"] == pytest.approx(0.1)
    assert h["worst_rel_wer_reduction_linear_50_standard_voices"] == pytest.approx(0.1)
    assert h["base_wer_real_speech"] == 0.05 and h["faster_whisper_wer_real_speech"] == 0.06
    assert report["targets"]["no_new_speaker_voice_worse_linear_50"]["met"] is False
    assert report["targets"]["real_speech_within_0.03_of_faster_whisper"]["met"] is True
    assert h["worst_rel_wer_reduction_linear_50_served"] is None  # nothing gated in these records


def test_gate_decides_what_a_speaker_is_served():
    improves = gate_decision([[3, 10]] * 20, [[1, 10]] * 20)
    assert improves["decision"] == "promote" and improves["candidate_wer"] == pytest.approx(0.1)
    worse = gate_decision([[1, 10]] * 20, [[2, 10]] * 20)
    assert worse["decision"] == "reject"
    too_few_words = gate_decision([[3, 10]] * 2, [[0, 10]] * 2)  # 20 words < the product's 40
    assert too_few_words["decision"] == "reject" and "too few" in too_few_words["reason"]

    options = BenchOptions(voices=("v1", "v2", "v3"), standard_voices=(), sizes=(50,),
                           systems_by_size={50: ("linear_zero",)})
    records = [
        _base("v1", 2.0, 0.9), _base("v2", 1.0, 0.8), _base("v3", 0.2, 0.2),
        {**_sys("v1", 50, "linear_zero", 0.5, 100), "gate": improves},
        {**_sys("v2", 50, "linear_zero", 0.5, 100), "gate": improves},
        {**_sys("v3", 50, "linear_zero", 0.3, 100), "gate": worse},  # worse head, rejected: v3 keeps the base
    ]
    foundations = Foundations(_Foundation(), _Foundation(), {}, "trained (test)", {})
    report = summarize(options, foundations, records, None)
    h = report["headline"]
    assert h["worst_rel_wer_reduction_linear_50"] == pytest.approx(-0.5)  # the head itself
    assert h["worst_rel_wer_reduction_linear_50_served"] == 0.0  # what the speaker gets
    assert h["promoted_linear_50_new_speaker_voices"] == "2/3"
    assert h["median_rel_wer_reduction_linear_50_served"] == pytest.approx((0.75 + 0.5) / 2)
    assert report["targets"]["no_new_speaker_voice_worse_linear_50_served"]["met"] is True
    assert report["per_voice"]["v3"]["systems"]["linear_zero_50"]["gate"]["decision"] == "reject"


def test_variant_controllers_are_trained_by_the_shipped_command_with_their_options(tmp_path: Path):
    record = {"command": "python -m hra.training.controller --manifest corpus/manifest.jsonl --out hra/assets "
                         "--work-dir var/w --per-voice 60 --context min5 --options '{\"u_init\": 0.5}'",
              "options": {"u_init": 0.5, "train_u": True, "head_lr": 0.003}}
    (tmp_path / "controller.json").write_text(json.dumps(record))
    argv = variant_controller_argv(tmp_path / "controller.json", VARIANT_CONTROLLERS["u0"], tmp_path / "out",
                                   tmp_path / "work")
    assert argv[:6] == ["--manifest", "corpus/manifest.jsonl", "--per-voice", "60", "--context", "min5"]
    assert argv[argv.index("--out") + 1] == str(tmp_path / "out") and "hra/assets" not in argv
    assert json.loads(argv[argv.index("--options") + 1]) == {"u_init": 0.0, "train_u": False, "head_lr": 0.003}
    assert argv[-1] == "--resume"
    argv = variant_controller_argv(tmp_path / "controller.json", VARIANT_CONTROLLERS["decoder"], tmp_path / "out",
                                   tmp_path / "work")
    assert json.loads(argv[argv.index("--options") + 1]) == {"u_init": 0.5, "train_u": True, "head_lr": 0.003,
                                                             "include_decoder": True}


def test_budgets_scale_with_the_machine_speed_but_keys_stay_nominal(tmp_path: Path):
    from tests.hra.fake_backbone import make_fake_foundation

    fake = make_fake_foundation()
    foundations = Foundations(fake, fake, {}, "trained (test)", {})

    def bench(factor):
        options = BenchOptions(voices=("v1",), standard_voices=(), sizes=(50,), systems_by_size={50: ("linear_zero",)},
                               work_dir=tmp_path / str(factor), speed_factor=factor)
        return Bench(options, foundations)

    slow, reference = bench(2.5), bench(1.0)
    assert slow.training.max_seconds == pytest.approx(2.5 * 60) and reference.training.max_seconds == 60
    system = SYSTEMS_BY_NAME["linear_zero"]
    # a measurement on a slow machine with a scaled budget is the same measurement as on the reference machine
    assert slow._key("system", system, voice="v1", size=50) == reference._key("system", system, voice="v1", size=50)
    assert parse_args(["--speed-factor", "1"]).speed_factor == 1.0 and parse_args([]).speed_factor is None
    with pytest.raises(SystemExit):
        parse_args(["--speed-factor", "0"])


def test_beam_size_option_reaches_the_bench_and_zero_is_refused():
    assert parse_args(["--beam-size", "1"]).beam_size == 1 and parse_args([]).beam_size is None
    with pytest.raises(SystemExit):
        parse_args(["--beam-size", "0"])


def test_reference_step_times_a_training_step_and_gives_a_factor(monkeypatch):
    import hra.bench.speed as speed
    from tests.hra.fake_backbone import make_fake_foundation

    fake = make_fake_foundation()
    seconds = speed.reference_step_seconds(fake, repeats=2)
    assert 0 < seconds < 10
    with pytest.raises(ValueError):
        speed.reference_step_seconds(fake, repeats=0)
    monkeypatch.setattr(speed, "reference_step_seconds", lambda foundation, repeats: 3.0)
    factor, measured = speed.speed_factor(fake)
    assert measured == 3.0 and factor == pytest.approx(3.0 / speed.REFERENCE_STEP_SECONDS)


def test_training_seconds_are_reported_in_reference_seconds_too():
    assert reference_seconds({"train_seconds": 120.0, "speed_factor": 2.0}) == 60.0
    assert reference_seconds({"train_seconds": 45.0}) == 45.0  # measured before calibration: taken as reference


def test_the_speed_factor_is_measured_once_and_only_when_a_training_needs_it(tmp_path: Path, monkeypatch):
    import hra.bench.foundation.measure as bench_module
    from tests.hra.fake_backbone import make_fake_foundation

    calls = []
    monkeypatch.setattr(bench_module, "speed_factor", lambda foundation: calls.append(1) or (2.0, 1.78))
    fake = make_fake_foundation()
    options = BenchOptions(voices=("v1",), standard_voices=(), sizes=(50,), systems_by_size={50: ("linear_zero",)},
                           work_dir=tmp_path)
    bench = Bench(options, Foundations(fake, fake, {}, "trained (test)", {}))
    bench.log = lambda msg: None
    assert calls == []  # constructing a bench (a run whose store holds everything) measures nothing
    assert bench.training.max_seconds == pytest.approx(120) and bench.training.max_seconds == pytest.approx(120)
    assert calls == [1] and bench.options.speed_factor == 2.0


def test_real_speech_comes_from_a_folder_given_on_the_command_line(tmp_path: Path):
    default = parse_args([]).real_speech
    assert default == REAL_SPEECH and "tests" not in default.relative_to(ROOT).parts
    assert (default / "manifest.jsonl").is_file()
    assert parse_args(["--real-speech", str(tmp_path)]).real_speech == tmp_path
    assert parse_args(["--no-real-speech"]).real_speech is None


def test_a_stored_real_speech_measurement_is_reused_only_for_the_same_recordings(tmp_path: Path, monkeypatch):
    import hra.bench.foundation.measure as bench_module
    from tests.hra.fake_backbone import make_fake_foundation

    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text(json.dumps({"file": "a.flac", "transcript": "hello there"}) + "\n")
    fake = make_fake_foundation()
    options = BenchOptions(voices=(), standard_voices=(), sizes=(50,), systems_by_size={}, work_dir=tmp_path / "w",
                           real_speech=folder)
    bench = Bench(options, Foundations(fake, fake, {}, "trained (test)", {}))
    stored = bench.store.put({"key": bench._key("real_speech"), "kind": "real_speech", "files": ["a.flac"],
                              "references": ["hello there"]})

    class Measured(Exception):
        pass

    def measure(folder):
        raise Measured(folder)

    monkeypatch.setattr(bench_module, "load_real_speech", measure)
    assert bench.real_speech() == stored  # the same recordings: nothing is measured
    (folder / "manifest.jsonl").write_text(json.dumps({"file": "b.flac", "transcript": "good bye"}) + "\n")
    with pytest.raises(Measured):
        bench.real_speech()
