"""The device benchmark's command line and report (its measurements need a corpus and the real backbone), and the
service benchmark (``benchmarks/service_training.py``) that adds the service's section to the device record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hra.bench.device.cli import SECTIONS, parse_args
from hra.bench.device.report import headline, print_tables
from hra.bench.paths import RESULTS_DIR

RECORD = RESULTS_DIR / "device_h100.json"  # a committed record of both parts (written when they were one command)


def test_the_service_section_is_refused_with_the_command_that_measures_it(tmp_path: Path, capsys):
    common = ["--out", str(tmp_path / "device.json"), "--device", "cpu", "--work-dir", str(tmp_path)]
    assert parse_args(common).sections == set(SECTIONS) == {"train", "serve"}
    with pytest.raises(SystemExit) as exc:
        parse_args([*common, "--sections", "train,serve,service"])
    assert exc.value.code == 2 and "benchmarks/service_training.py --into" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*common, "--sections", "train,nonsense"])


def test_the_device_report_leaves_the_service_to_its_own_benchmark(capsys):
    record = json.loads(RECORD.read_text())
    h = headline(record)
    assert h["bench"] == "hra.bench.device" and h["gpu"] == record["environment"]["gpu"]
    assert not any(k.startswith("service_") for k in h) and h["errors"] == 0
    print_tables(record)
    assert "service" not in capsys.readouterr().out


def test_the_service_benchmark_adds_its_section_to_a_device_record(tmp_path: Path):
    from benchmarks.service_training import headline as service_headline
    from benchmarks.service_training import merge_into
    from benchmarks.service_training import parse_args as service_args

    committed = json.loads(RECORD.read_text())
    record = {k: v for k, v in committed.items() if k != "service"}
    record["errors"] = [{"section": "cpu serve", "error": "x"}, {"section": "service", "error": "an earlier run"}]
    path = tmp_path / "device.json"
    path.write_text(json.dumps(record))
    work = ["--work-dir", str(tmp_path / "work")]

    args = service_args(["--into", str(path), *work])  # what it measures: the record's voice, sizes and budget
    assert (args.voice, args.n_train, args.n_eval, args.max_seconds, args.max_epochs, args.device) == (
        record["voice"], record["n_train"], record["n_eval"], record["max_seconds"], record["max_epochs"], "cuda")
    assert service_args(["--into", str(path), "--voice", "espeak-hu", "--device", "cpu", *work]).voice == "espeak-hu"
    merge_into(path, committed["service"], [])
    merged = json.loads(path.read_text())
    assert merged["service"] == committed["service"]
    assert merged["errors"] == [{"section": "cpu serve", "error": "x"}]  # the earlier service run's error replaced
    assert {k: merged[k] for k in committed if k != "errors"} == {k: v for k, v in committed.items() if k != "errors"}
    h = service_headline("cuda", merged["service"], [])
    assert (h["service_train_s"], h["service_head_wer"], h["service_base_wer"]) == (16.2, 0.5524, 1.0643)

    with pytest.raises(SystemExit):
        service_args(work)  # neither --out nor --into
    with pytest.raises(SystemExit):
        service_args(["--into", str(tmp_path / "missing.json"), *work])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"bench": "hra.bench.foundation"}))
    with pytest.raises(SystemExit):
        service_args(["--into", str(other), *work])
