"""Memory of the embedded mode (``hra run``: the supervisor, the API and two workers) through a speaker's whole life.

    OMP_NUM_THREADS=1 python benchmarks/embedded_memory.py [--epochs 4] [--out benchmarks/results/embedded_memory.json]

Starts ``hra run`` as ``make run`` does, on a fresh var directory, and drives it over HTTP with the project's client:
the base model transcribes the 16 real recordings, a speaker (the pt-br fixture speaker) enrolls its utterances, an
adaptation job trains and evaluates a linear head (``--epochs``), and the speaker's head transcribes the recordings
again. Every 0.25 s a sampler reads each process of the tree: RSS (what ``ps`` shows; pages of the same shared
libraries count in every process) and PSS (each shared page divided among the processes that map it: their sum is
the tree's real footprint), from ``/proc/<pid>/smaps_rollup``. Reported: the peak of the tree's summed RSS and PSS,
each process's own peak RSS (``VmHWM``), and the phase each peak fell in.

Writes ``benchmarks/results/embedded_memory.json``; the last line printed is one JSON object of headline numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.client.api import HRAClient  # noqa: E402 - after the path setup, for a run from a checkout

SPEAKER = ROOT / "tests" / "fixtures" / "speaker_ptbr"
REAL_SPEECH = ROOT / "benchmarks" / "data" / "real_speech"
RESULTS = ROOT / "benchmarks" / "results"


def _children(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _memory_mb(pid: int) -> tuple[float, float, float] | None:
    """(RSS, PSS, VmHWM) of a live process, MB; None once it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {}
    for line in (*rollup.splitlines(), *status.splitlines()):
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0]) / 1024
    return fields.get("Rss", 0.0), fields.get("Pss", 0.0), fields.get("VmHWM", 0.0)


def _command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    tail = [w for w in words if not w.startswith("-") and "/" not in w][:3]
    return " ".join(tail) or (words[0] if words else "?")


class Sampler:
    """Polls the process tree under ``root_pid`` until stopped; keeps the peaks and the phase each fell in."""

    def __init__(self, root_pid: int, period_s: float = 0.25) -> None:
        self.root_pid, self.period_s = root_pid, period_s
        self.phase = "start"
        self.peak_rss = self.peak_pss = 0.0
        self.peak_rss_phase = self.peak_pss_phase = ""
        self.per_process: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total_rss = total_pss = 0.0
            for pid in _children(self.root_pid):
                m = _memory_mb(pid)
                if m is None:
                    continue
                rss, pss, hwm = m
                total_rss += rss
                total_pss += pss
                entry = self.per_process.setdefault(pid, {"command": _command_name(pid), "peak_rss_mb": 0.0})
                entry["peak_rss_mb"] = round(max(entry["peak_rss_mb"], hwm, rss), 1)
            if total_rss > self.peak_rss:
                self.peak_rss, self.peak_rss_phase = total_rss, self.phase
            if total_pss > self.peak_pss:
                self.peak_pss, self.peak_pss_phase = total_pss, self.phase
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="the adaptation job's max_epochs")
    p.add_argument("--out", type=Path, default=RESULTS / "embedded_memory.json")
    args = p.parse_args(argv)
    started = time.perf_counter()
    key = "hra_" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="hra-embedded-memory-") as tmp:
        var_dir = Path(tmp)
        port = _free_port()
        env = {**os.environ, "HRA_VAR_DIR": str(var_dir), "PORT": str(port), "HRA_BOOTSTRAP_API_KEY": key}
        env.pop("HRA_DATABASE_URL", None)
        log = open(var_dir / "hra-run.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hra"), "run"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
        sampler = Sampler(proc.pid)
        report: dict = {}
        try:
            client = HRAClient(f"http://127.0.0.1:{port}", key, timeout_s=600)
            deadline = time.monotonic() + 180
            while True:
                try:
                    client.health()
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"hra run did not come up; see {var_dir / 'hra-run.log'}") from None
                    time.sleep(0.5)
            recordings = sorted(REAL_SPEECH.glob("*.flac"))
            sampler.phase = "base transcription"
            for path in recordings:
                client.transcribe(path.read_bytes(), filename=path.name)
            sampler.phase = "enrollment"
            speaker = client.create_speaker(external_id="memory-bench")
            rows = [json.loads(line) for line in (SPEAKER / "manifest.jsonl").read_text().splitlines() if line]
            for row in rows:
                client.upload_utterance(speaker.id, (SPEAKER / row["file"]).read_bytes(), row["text"],
                                        split=row["split"], filename=row["file"])
            sampler.phase = "training and evaluation"
            job = client.start_adaptation(speaker.id, max_epochs=args.epochs)
            job = client.wait_for_job(job.id)
            sampler.phase = "head transcription"
            for path in recordings:
                client.transcribe(path.read_bytes(), speaker_id=speaker.id, filename=path.name)
            time.sleep(1.0)  # one more sample of the settled tree
            report["job"] = {"state": job.state, "utterances": len(rows), "max_epochs": args.epochs}
        finally:
            sampler.stop()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    processes = sorted(sampler.per_process.values(), key=lambda e: -e["peak_rss_mb"])
    summary = {
        "embedded_peak_pss_mb": round(sampler.peak_pss, 1),
        "embedded_peak_pss_phase": sampler.peak_pss_phase,
        "embedded_peak_rss_sum_mb": round(sampler.peak_rss, 1),
        "embedded_peak_rss_sum_phase": sampler.peak_rss_phase,
        "largest_process_peak_rss_mb": processes[0]["peak_rss_mb"] if processes else 0.0,
        "job_state": report.get("job", {}).get("state"),
    }
    report.update({
        "benchmark": "embedded_memory",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "processes": [p for p in processes if p["peak_rss_mb"] > 50],
        "summary": summary,
        "run_seconds": round(time.perf_counter() - started, 1),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for entry in report["processes"]:
        print(f"{entry['command'][:60]:60} peak RSS {entry['peak_rss_mb']:8.1f} MB")
    print(f"tree peak: PSS {summary['embedded_peak_pss_mb']} MB ({summary['embedded_peak_pss_phase']}), summed RSS "
          f"{summary['embedded_peak_rss_sum_mb']} MB ({summary['embedded_peak_rss_sum_phase']}); job {job.state}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
