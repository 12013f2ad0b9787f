"""Serving under concurrency: the batching engine vs one model pass at a time, and head load from cache vs store.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_concurrency.py [--clients 4] [--rounds 1] [--no-s3]

Workload: 8 short real recordings (benchmarks/data/real_speech, 1.5-4 s), 4 client threads, each sending every
recording once (rotated order, one request at a time, as a client waiting for its answer would): 32 requests per
configuration, 1 torch thread, beam as the settings say (5). Configurations:

- ``serial``: what ``HRAMLService`` did before the engine: one ``hra.inference.transcribe`` call per request behind
  a global lock (heads already parsed, so only batching differs);
- ``engine``: ``HRAMLService`` with ``app.engine.TranscriptionEngine`` (``engine_batch_wait_ms``,
  ``engine_max_batch_size`` from the settings: 5 ms, 16).

each for the base model and for heads (4 speakers, one per client: the shipped prior head perturbed per speaker).
Texts of both configurations are compared utterance by utterance (they must be equal).

Head load: the parsed head from the cache (``HRAMLService.load_head(HeadRef)``, a hit) vs a miss: artifact from the
object store (local directory; S3 = a moto server in a child process, as the tests use) + parsing.

Prints a table, writes ``benchmarks/results/engine_concurrency.json``, ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from app.hra_ml import HRAMLService
from app.ml import HeadRef
from app.settings import Settings

UTTERANCES = [
    "cards_002.flac",
    "cards_005.flac",
    "asterisk_agent-newlocation.flac",
    "asterisk_conf-onlyperson.flac",
    "asterisk_demo-nomatch.flac",
    "asterisk_followme_sorry.flac",
    "librivox_0880.flac",
    "librivox_0930.flac",
]
SR = 16000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Serial:
    """The old behaviour: one pass per request behind a global lock."""

    def __init__(self, foundation, parse) -> None:
        self.foundation, self.parse, self.lock = foundation, parse, threading.Lock()

    def transcribe(self, waveforms, heads):
        from hra.inference import transcribe

        parsed = [None if h is None else self.parse(h) for h in heads]
        with self.lock:
            return transcribe(self.foundation, list(waveforms), parsed)


def run_clients(service, waves, heads_of_client, clients: int, rounds: int) -> dict:
    """Every client sends every utterance ``rounds`` times, one at a time; latency per request, wall time."""
    latencies: list[float] = []
    texts: dict[tuple[int, int], str] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        barrier.wait()
        for r in range(rounds):
            for k in range(len(waves)):
                i = (k + 2 * c + r) % len(waves)
                started = time.perf_counter()
                text = service.transcribe([waves[i]], [heads_of_client[c]])[0]
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    texts[(c, i)] = text

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    audio_s = rounds * clients * sum(w.numel() for w in waves) / SR
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 3),
        "x_realtime": round(audio_s / wall, 2),
        "p50_s": round(percentile(latencies, 0.5), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "texts": texts,
    }


def timed_ms(fn, n: int) -> dict:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(samples), 4), "p95_ms": round(percentile(samples, 0.95), 4), "n": n}


def start_moto() -> tuple[subprocess.Popen, int]:
    script = (
        "import sys\nfrom moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer('127.0.0.1', 0, verbose=False)\nserver.start()\n"
        "print(server.get_host_and_port()[1], flush=True)\nsys.stdin.read()\nserver.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env={**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"},
    )
    line = proc.stdout.readline()
    return proc, int(line)


def head_load(service: HRAMLService, artifact: bytes, use_s3: bool) -> dict:
    from storage.objects import LocalObjectStore, MinioObjectStore

    out: dict = {"artifact_bytes": len(artifact)}
    ref_id = str(uuid.uuid4())
    stores = []
    tmp = tempfile.TemporaryDirectory()
    stores.append(("local", LocalObjectStore(Path(tmp.name)), None))
    proc = None
    if use_s3:
        try:
            proc, port = start_moto()
            store = MinioObjectStore(f"127.0.0.1:{port}", "bench", "bench-secret", "hra-bench", region="us-east-1")
            stores.append(("s3_moto", store, proc))
        except Exception as exc:  # noqa: BLE001 - reported, local numbers still stand
            out["s3_error"] = repr(exc)
    try:
        for name, store, _ in stores:
            key = f"tenants/t/speakers/s/heads/{ref_id}.safetensors"
            store.put(key, artifact, "application/octet-stream")
            ref = HeadRef(f"{name}-{ref_id}", functools.partial(store.get, key))

            def miss(ref: HeadRef = ref) -> None:
                service.evict(ref.id)
                service.load_head(ref)

            get = timed_ms(functools.partial(store.get, key), 50)
            load = timed_ms(miss, 50)
            out[name] = {"store_get": get, "store_get_and_parse": load}
            service.load_head(ref)
            out["cache_hit"] = timed_ms(functools.partial(service.load_head, ref), 2000)
        out["parse_only"] = timed_ms(lambda: service._parse_for_serving(artifact), 50)
    finally:
        if proc is not None:
            proc.stdin.close()
            proc.wait(10)
        tmp.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_concurrency.json")
    args = parser.parse_args()

    loadavg_at_start = os.getloadavg()
    torch.set_num_threads(1)
    from hra.adapter.artifacts import head_from_bytes, head_to_bytes
    from hra.foundation import load_foundation
    from hra.training.head import load_prior_head

    settings = Settings(_env_file=None, var_dir=Path(tempfile.mkdtemp()), torch_threads=1, device="cpu")
    started = time.perf_counter()
    foundation = load_foundation(device="cpu", beam_size=settings.beam_size)
    load_s = time.perf_counter() - started
    service = HRAMLService(settings, loader=lambda: foundation)
    folder = REPO / "benchmarks" / "data" / "real_speech"
    waves = [service.decode_audio((folder / name).read_bytes()).waveform for name in UTTERANCES]

    artifacts = []
    for c in range(args.clients):  # one speaker per client: the prior head, perturbed per speaker
        head = load_prior_head(foundation, "linear")
        with torch.no_grad():
            g = torch.Generator().manual_seed(c)
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=g) * p.abs().mean() * 0.3)
        artifacts.append(head_to_bytes(head, foundation, {"speaker": c}))
    serial = Serial(foundation, functools.lru_cache(maxsize=None)(lambda a: head_from_bytes(a, foundation)))

    # Warm-up: one pass each way (first-call allocations), not timed.
    service.transcribe(waves[:2], [None, artifacts[0]])
    serial.transcribe(waves[:1], [artifacts[0]])

    results: dict = {}
    equal = True
    for kind, heads in (("base", [None] * args.clients), ("heads", artifacts)):
        for name, svc in (("serial", serial), ("engine", service)):
            before = dict(service.engine_stats())
            r = run_clients(svc, waves, heads, args.clients, args.rounds)
            if name == "engine":
                after = service.engine_stats()
                batches = after["batches"] - before.get("batches", 0)
                r["engine_batches"] = batches
                r["mean_batch_size"] = round((after["items"] - before.get("items", 0)) / max(1, batches), 2)
            results[f"{kind}_{name}"] = r
            print(f"{kind:5} {name:6} {r['requests']} req in {r['wall_s']:.1f} s: {r['throughput_rps']:.2f} req/s, "
                  f"{r['x_realtime']:.1f}x real time, p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s"
                  + (f", mean batch {r['mean_batch_size']}" if name == "engine" else ""), flush=True)
        same = results[f"{kind}_serial"]["texts"] == results[f"{kind}_engine"]["texts"]
        results[f"{kind}_texts_equal"] = same
        equal = equal and same
    for r in results.values():
        if isinstance(r, dict):
            r.pop("texts", None)

    loads = head_load(service, artifacts[0], use_s3=not args.no_s3)
    print(json.dumps({"head_load": loads}, indent=1))
    service.close()

    def ratio(kind: str, field: str, inverse: bool = False) -> float:
        a, b = results[f"{kind}_engine"][field], results[f"{kind}_serial"][field]
        return round(b / a if inverse else a / b, 3)

    summary = {
        "throughput_ratio_base_engine_vs_serial": ratio("base", "throughput_rps"),
        "throughput_ratio_heads_engine_vs_serial": ratio("heads", "throughput_rps"),
        "p50_base_engine_s": results["base_engine"]["p50_s"],
        "p50_base_serial_s": results["base_serial"]["p50_s"],
        "p95_base_engine_s": results["base_engine"]["p95_s"],
        "p95_base_serial_s": results["base_serial"]["p95_s"],
        "p50_heads_engine_s": results["heads_engine"]["p50_s"],
        "p50_heads_serial_s": results["heads_serial"]["p50_s"],
        "p95_heads_engine_s": results["heads_engine"]["p95_s"],
        "p95_heads_serial_s": results["heads_serial"]["p95_s"],
        "texts_equal_batched_vs_single": equal,
        "head_load_cached_ms": loads["cache_hit"]["median_ms"],
        "head_load_store_ms": loads["local"]["store_get_and_parse"]["median_ms"],
        "head_load_s3_ms": loads.get("s3_moto", {}).get("store_get_and_parse", {}).get("median_ms"),
    }
    report = {
        "benchmark": "engine_concurrency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": loadavg_at_start},
        "setup": {
            "utterances": UTTERANCES, "audio_s": round(sum(w.numel() for w in waves) / SR, 2),
            "clients": args.clients, "rounds": args.rounds, "torch_threads": 1, "beam_size": settings.beam_size,
            "engine_batch_wait_ms": settings.engine_batch_wait_ms,
            "engine_max_batch_size": settings.engine_max_batch_size, "foundation_load_s": round(load_s, 2),
        },
        "results": results,
        "head_load": loads,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
