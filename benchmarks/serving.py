"""Serving side by side with faster-whisper, in one run: short utterances under concurrency, long-form, memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving.py [--quick]       (make bench-serving [BENCH_ARGS=--quick])

Product: a real API process (``hra api`` in a subprocess; embedded SQLite and local object store in a temp var dir;
``HRA_TORCH_THREADS=1``; beam 5, the settings' decoder), spoken to over HTTP on the OpenAI route
``POST /v1/audio/transcriptions`` by C client threads (httpx), base model (``whisper-tiny.en``) and speakers' heads.
Heads: K speakers seeded before the API starts, each with a promoted (``in_service``) Head row whose artifact is the
shipped linear prior head perturbed per speaker (``head_to_bytes`` with the foundation's fingerprints, written to the
object store at ``head_key``): synthetic heads, so their WER says nothing about personalization (it is reported
only to show nothing broke). With K heads, request i goes to speaker i mod K.

Peer: faster-whisper 1.x, int8, the same Whisper tiny.en model directory, beam 5, ``language="en"``, in worker
subprocesses (one CTranslate2 thread each; no HTTP, which favours the peer): sequential with temperature fallback
on (its default) and off; 2 workers x 1 thread under C clients (a client waits for a free worker; latency counts
the wait); ``BatchedInferencePipeline`` (batch 16, 2 threads) one request at a time. "The peer's best" is the
highest throughput among them.

Every configuration sends the same utterances (the 16 real recordings of benchmarks/data/real_speech; without
--quick also the held-out split of tests/fixtures/speaker_ptbr), cycled so that each client sends at least two;
product and peer configurations alternate in one run (the machine may be shared: compare within a run). WER beside
every speed (hra.bench.foundation.scoring). Long-form: the real recordings concatenated in a shuffled order (seeded)
with 0.3-1.5 s pauses until the target length (10 min; --quick 3 min), through the OpenAI route (base and one head)
vs faster-whisper (sequential without fallback; BatchedInferencePipeline) on the same file, WER against the joined
transcripts. Peak RSS: VmHWM of the API process vs of a faster-whisper worker. Head load cached / from the store:
``benchmarks/results/engine_concurrency.json`` (the engine benchmark measures it in-process; over HTTP it hides in
the request time).

Prints a table, writes ``benchmarks/results/serving.json``, ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SR = 16000
REAL = REPO / "benchmarks" / "data" / "real_speech"
PTBR = REPO / "tests" / "fixtures" / "speaker_ptbr"
ENGINE_RESULTS = REPO / "benchmarks" / "results" / "engine_concurrency.json"
BASE_MODEL = "whisper-tiny.en"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process (``VmHWM`` in /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# ----------------------------------------------------------------------------------------------------------------
# The peer: a faster-whisper worker process speaking JSON lines on stdin/stdout.


def peer_worker_main(model_dir: str, threads: int, batched: bool) -> None:
    import numpy as np
    import soundfile as sf
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    pipe = BatchedInferencePipeline(model) if batched else None
    cache: dict[str, np.ndarray] = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        path = cmd["path"]
        if path not in cache:
            audio, sr = sf.read(path, dtype="float32")
            assert sr == SR, (path, sr)
            cache[path] = audio if audio.ndim == 1 else audio.mean(axis=1)
        audio = cache[path]
        opts: dict = {"beam_size": 5, "language": "en"}
        if not cmd.get("fallback", True):
            opts["temperature"] = 0.0
        started = time.perf_counter()
        if pipe is not None:
            segments, _ = pipe.transcribe(audio, batch_size=cmd.get("batch_size", 16), **opts)
        else:
            segments, _ = model.transcribe(audio, **opts)
        text = " ".join(s.text.strip() for s in segments).strip()
        print(json.dumps({"text": text, "seconds": time.perf_counter() - started}), flush=True)


class Peer:
    def __init__(self, model_dir: str, threads: int = 1, batched: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--peer-worker", model_dir, str(threads), "1" if batched else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
        assert json.loads(self.proc.stdout.readline())["ready"]

    def transcribe(self, path: str, fallback: bool = True) -> str:
        self.proc.stdin.write(json.dumps({"path": path, "fallback": fallback}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["text"]

    def peak_rss_mb(self) -> float:
        return vm_hwm_mb(self.proc.pid)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(20)


# ----------------------------------------------------------------------------------------------------------------
# Clients


def run_clients(send, items: list[tuple[str, str, float, str]], clients: int) -> dict:
    """``items``: (path, reference, seconds, model) in order; C threads take the next item when their last answer
    is back (a client waiting for its answer). ``send(path, model) -> text``."""
    todo: queue.Queue = queue.Queue()
    for i, item in enumerate(items):
        todo.put((i, item))
    latencies: list[float] = [0.0] * len(items)
    texts: list[str] = [""] * len(items)
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        barrier.wait()
        while True:
            try:
                i, (path, _ref, _sec, model) = todo.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            try:
                texts[i] = send(path, model)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc)[:300])
            latencies[i] = time.perf_counter() - started

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    from hra.bench.foundation.scoring import score

    audio_s = sum(it[2] for it in items)
    return {
        "clients": clients, "requests": len(items), "errors": len(errors), "first_errors": errors[:3],
        "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "x_realtime": round(audio_s / wall, 2),
        "throughput_rps": round(len(items) / wall, 3),
        "p50_s": round(percentile(latencies, 0.5), 3), "p95_s": round(percentile(latencies, 0.95), 3),
        "wer": round(score([it[1] for it in items], texts)["wer"], 4), "texts": texts,
    }


class PeerPool:
    """N peer workers serving one FIFO request queue (as a server with N workers would): a request waits for a free
    worker in arrival order; latency counts the wait."""

    def __init__(self, peers: list[Peer], fallback: bool) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.fallback = fallback
        for peer in peers:
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: Peer) -> None:
        while True:
            job = self.requests.get()
            if job is None:
                return
            path, done, out = job
            try:
                out.append(peer.transcribe(path, self.fallback))
            except Exception as exc:  # noqa: BLE001 - handed to the client
                out.append(exc)
            done.set()

    def send(self, path: str, _model: str) -> str:
        done, out = threading.Event(), []
        self.requests.put((path, done, out))
        done.wait()
        if isinstance(out[0], Exception):
            raise out[0]
        return out[0]

    def close(self, workers: int) -> None:
        for _ in range(workers):
            self.requests.put(None)


# ----------------------------------------------------------------------------------------------------------------
# The product: seed a var dir, start ``hra api``, speak HTTP to it.


def seed(var_dir: Path, k_max: int) -> tuple[str, list[str], dict]:
    """Migrate a fresh SQLite database, create a key and ``k_max`` speakers with an in-service synthetic head."""
    import torch

    from app.security import create_api_key
    from app.settings import Settings
    from hra.adapter.artifacts import head_to_bytes
    from hra.foundation import load_foundation
    from hra.training.head import load_prior_head
    from storage.db import make_engine, make_session_factory
    from storage.migrate import upgrade
    from storage.models import Head, HeadStatus, HeadType, Speaker
    from storage.objects import LocalObjectStore
    from storage.objects.keys import head_key

    settings = Settings(_env_file=None, var_dir=var_dir)
    upgrade(settings.database_url)
    store = LocalObjectStore(settings.object_store_dir)
    torch.set_num_threads(1)
    foundation = load_foundation(device="cpu")
    model_dir = str(foundation.backbone.source["model_dir"])
    sessions = make_session_factory(make_engine(settings.database_url))
    speakers: list[str] = []
    sizes = []
    with sessions() as db:
        tenant, key = create_api_key(db, "bench")
        db.flush()
        for k in range(k_max):
            head = load_prior_head(foundation, "linear")
            with torch.no_grad():
                g = torch.Generator().manual_seed(1000 + k)
                for p in head.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * p.abs().mean() * 0.1)
            artifact = head_to_bytes(head, foundation, {"bench": "serving", "speaker": k})
            sizes.append(len(artifact))
            speaker = Speaker(tenant_id=tenant.id, external_id=f"bench-{k:03d}", display_name=f"bench {k}")
            db.add(speaker)
            db.flush()
            head_id = uuid.uuid4()
            object_key = head_key(tenant.id, speaker.id, head_id)
            store.put(object_key, artifact, "application/octet-stream")
            db.add(Head(
                id=head_id, speaker_id=speaker.id, version=1, head_type=HeadType.linear,
                status=HeadStatus.in_service, object_key=object_key, sha256=hashlib.sha256(artifact).hexdigest(),
                size_bytes=len(artifact), parameters=sum(p.numel() for p in head.parameters()),
                backbone_fingerprint=foundation.backbone.fingerprint,
                controller_fingerprint=foundation.controller_fingerprint,
                train_utterance_ids=[], train_metrics={"synthetic": True},
                promoted_at=datetime.now(UTC),
            ))
            speakers.append(str(speaker.id))
        db.commit()
    del foundation
    return key, speakers, {"model_dir": model_dir, "head_artifact_bytes": max(sizes) if sizes else 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, var_dir: Path, key: str) -> None:
        import httpx

        self.port = free_port()
        env = {**os.environ, "HRA_VAR_DIR": str(var_dir), "HRA_TORCH_THREADS": "1", "HRA_BEAM_SIZE": "5",
               "OMP_NUM_THREADS": "1", "HRA_BROKER_URL": f"sqla+sqlite:///{var_dir / 'broker.db'}"}
        env.pop("HRA_DATABASE_URL", None)
        self.log = open(var_dir / "api.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "hra"), "api", "--port", str(self.port), "--log-level", "WARNING"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(var_dir),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        deadline = time.monotonic() + 180
        while True:
            try:
                if self.client.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {(var_dir / 'api.log').read_text()[-2000:]}")
            time.sleep(0.2)
        self.audio: dict[str, bytes] = {}

    def send(self, path: str, model: str) -> str:
        if path not in self.audio:
            self.audio[path] = Path(path).read_bytes()
        name = Path(path).name
        r = self.client.post(f"{self.url}/v1/audio/transcriptions", headers=self.headers,
                             files={"file": (name, self.audio[path])},
                             data={"model": model, "response_format": "json"})
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
        return r.json()["text"].strip()

    def peak_rss_mb(self) -> float:
        return vm_hwm_mb(self.proc.pid)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ----------------------------------------------------------------------------------------------------------------


def load_items(quick: bool) -> list[tuple[str, str, float]]:
    items = []
    for line in (REAL / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            items.append((str(REAL / r["file"]), r["transcript"], float(r["duration_s"])))
    if not quick:
        for line in (PTBR / "manifest.jsonl").read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["split"] == "eval":
                    items.append((str(PTBR / r["file"]), r["text"], float(r["duration_s"])))
    return items


def longform_file(out: Path, target_s: float, seed: int = 7) -> tuple[float, str]:
    """The real recordings, shuffled (seeded), joined with 0.3-1.5 s pauses until ``target_s``; 16 kHz WAV."""
    import numpy as np
    import soundfile as sf

    rows = [json.loads(line) for line in (REAL / "manifest.jsonl").read_text().splitlines() if line.strip()]
    waves = {}
    for r in rows:
        a, sr = sf.read(REAL / r["file"], dtype="float32")
        assert sr == SR
        waves[r["file"]] = a if a.ndim == 1 else a.mean(axis=1)
    rng = random.Random(seed)
    parts, refs, total = [], [], 0.0
    while total < target_s:
        order = rows[:]
        rng.shuffle(order)
        for r in order:
            if total >= target_s:
                break
            pause = np.zeros(int(SR * rng.uniform(0.3, 1.5)), dtype="float32")
            parts += [waves[r["file"]], pause]
            refs.append(r["transcript"])
            total += (len(waves[r["file"]]) + len(pause)) / SR
    audio = np.concatenate(parts)
    sf.write(out, audio, SR, subtype="PCM_16")
    return len(audio) / SR, " ".join(refs)


def row(name: str, r: dict, who: str) -> str:
    return (f"{who:8} {name:34} {r['clients']:>3} {r['requests']:>4} {r['x_realtime']:>7.2f}x {r['throughput_rps']:>7.2f}"
            f" {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['wer']:>7.4f}" + (f"  ERR {r['errors']}" if r["errors"] else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="real recordings only; K = 1, 64 at 4, 16 clients; 3-min "
                   "long-form")
    p.add_argument("--longform-seconds", type=float, help="long-form target (default 600; --quick 180)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.json")
    args = p.parse_args()
    t_run = time.perf_counter()
    loadavg_at_start = os.getloadavg()
    longform_target = args.longform_seconds or (180.0 if args.quick else 600.0)
    ks = [1, 64] if args.quick else [1, 8, 64]
    client_counts = [1, 4, 16]
    head_clients = [4, 16] if args.quick else [1, 4, 16]

    base_items = load_items(args.quick)
    tmp = tempfile.TemporaryDirectory(prefix="hra-bench-serving-")
    var_dir = Path(tmp.name)
    key, speakers, info = seed(var_dir, max(ks))
    print(f"seeded {len(speakers)} speakers with synthetic heads in {time.perf_counter() - t_run:.1f} s", flush=True)
    lf_path = var_dir / "longform.wav"
    lf_seconds, lf_ref = longform_file(lf_path, longform_target)

    api = Api(var_dir, key)
    peers = [Peer(info["model_dir"]), Peer(info["model_dir"])]
    batched = Peer(info["model_dir"], threads=2, batched=True)
    print(f"API and peers up at {time.perf_counter() - t_run:.1f} s", flush=True)

    def items_for(clients: int, model_of, k: int = 0) -> list[tuple[str, str, float, str]]:
        n = max(len(base_items), 2 * clients, k)  # K heads: every one of them is used
        return [(*base_items[i % len(base_items)], model_of(i)) for i in range(n)]

    # Warm-up (not timed): the API's first base and head requests, every peer once.
    api.send(base_items[0][0], BASE_MODEL)
    api.send(base_items[0][0], f"speaker:{speakers[0]}")
    for peer in peers + [batched]:
        peer.transcribe(base_items[0][0])
    # Every speaker's head once (16 clients, untimed): the measured runs see a warm head cache, as steady serving
    # does; head load from the store is its own line (head_load_store_ms).
    shortest = min(base_items, key=lambda it: it[2])
    started = time.perf_counter()
    warm = run_clients(api.send, [(*shortest, f"speaker:{s}") for s in speakers], 16)
    print(f"head cache warmed: {len(speakers)} speakers in {time.perf_counter() - started:.1f} s "
          f"({warm['errors']} errors)", flush=True)

    results: dict[str, dict] = {}
    header = (f"{'who':8} {'configuration':34} {'C':>3} {'req':>4} {'x_rt':>8} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}"
              f" {'WER':>7}")
    print(header, flush=True)

    def measure(name: str, who: str, send, clients: int, model_of, k: int = 0) -> None:
        r = run_clients(send, items_for(clients, model_of, k), clients)
        results[name] = {"who": who, **r}
        print(row(name, r, who), flush=True)

    def base(_i: int) -> str:
        return BASE_MODEL

    def head_of(k: int, i: int) -> str:
        return f"speaker:{speakers[i % k]}"

    one_at_a_time = PeerPool(peers[:1], fallback=True)
    one_no_fallback = PeerPool(peers[:1], fallback=False)
    two_workers = PeerPool(peers, fallback=True)
    two_workers_no_fallback = PeerPool(peers, fallback=False)
    batched_pool = PeerPool([batched], fallback=True)
    batched_no_fallback = PeerPool([batched], fallback=False)
    # Interleaved: a peer configuration, then the product's, and so on.
    measure("fw_seq_fallback", "peer", one_at_a_time.send, 1, base)
    measure("api_base_c1", "product", api.send, 1, base)
    measure("fw_seq_no_fallback", "peer", one_no_fallback.send, 1, base)
    measure("api_base_c4", "product", api.send, 4, base)
    measure("fw_2w_fallback_c4", "peer", two_workers.send, 4, base)
    measure("api_base_c16", "product", api.send, 16, base)
    measure("fw_2w_no_fallback_c4", "peer", two_workers_no_fallback.send, 4, base)
    peer_left = [("fw_batched16_fallback", batched_pool.send, 1),
                 ("fw_batched16_no_fallback", batched_no_fallback.send, 1),
                 ("fw_2w_no_fallback_c16", two_workers_no_fallback.send, 16),
                 ("fw_2w_fallback_c16", two_workers.send, 16)]
    for k in ks:
        heads_of = functools.partial(head_of, k)
        for c in head_clients:
            measure(f"api_heads_k{k}_c{c}", "product", api.send, c, heads_of, k)
            if peer_left:  # interleaved with the product's head configurations
                name, send, clients = peer_left.pop(0)
                measure(name, "peer", send, clients, base)
    for name, send, clients in peer_left:
        measure(name, "peer", send, clients, base)

    # Long-form: the OpenAI route (base, one head) vs faster-whisper on the same file.
    from hra.bench.foundation.scoring import score

    longform: dict = {"audio_s": round(lf_seconds, 1)}
    runs = [("api_base", lambda: api.send(str(lf_path), BASE_MODEL)),
            ("fw_seq_no_fallback", lambda: peers[0].transcribe(str(lf_path), fallback=False)),
            ("api_head", lambda: api.send(str(lf_path), f"speaker:{speakers[0]}")),
            ("fw_batched16", lambda: batched.transcribe(str(lf_path), fallback=True))]
    if not args.quick:
        runs.append(("fw_seq_fallback", lambda: peers[1].transcribe(str(lf_path), fallback=True)))
    for name, fn in runs:
        started = time.perf_counter()
        try:
            text, err = fn(), None
        except Exception as exc:  # noqa: BLE001 - reported
            text, err = "", repr(exc)[:300]
        seconds = time.perf_counter() - started
        longform[name] = {"seconds": round(seconds, 2), "x_realtime": round(lf_seconds / seconds, 2),
                          "wer": round(score([lf_ref], [text])["wer"], 4), **({"error": err} if err else {})}
        print(f"long-form {lf_seconds:.0f} s  {name:20} {seconds:7.1f} s  {lf_seconds / seconds:6.2f}x  "
              f"WER {longform[name]['wer']:.4f}" + (f"  {err}" if err else ""), flush=True)

    api_rss = api.peak_rss_mb()
    peer_rss = max(pp.peak_rss_mb() for pp in peers)
    batched_rss = batched.peak_rss_mb()
    api.close()
    for pp in peers + [batched]:
        pp.close()
    tmp.cleanup()

    # Summary ----------------------------------------------------------------------------------------------------
    peer_short = {n: r for n, r in results.items() if r["who"] == "peer"}
    best_name = max(peer_short, key=lambda n: peer_short[n]["x_realtime"])
    best = peer_short[best_name]["x_realtime"]
    top_k = max(ks)
    heads_k64 = results[f"api_heads_k{top_k}_c16"]
    peer_c4 = results["fw_2w_fallback_c4"], results["fw_2w_no_fallback_c4"]
    peer_c4_best = max(peer_c4, key=lambda r: r["x_realtime"])
    lf_peer_name = max((n for n in longform if n.startswith("fw_") and "error" not in longform[n]),
                       key=lambda n: longform[n]["x_realtime"])
    single, batched16 = results["api_base_c1"], results["api_base_c16"]
    same_texts = sum(a == b for a, b in zip(single["texts"], batched16["texts"]))
    engine = json.loads(ENGINE_RESULTS.read_text())["summary"] if ENGINE_RESULTS.is_file() else {}
    real = [i for i, it in enumerate(base_items) if Path(it[0]).parent == REAL]  # the long-form file's sources
    per_utt_wer = round(score([base_items[i][1] for i in real], [single["texts"][i] for i in real])["wer"], 4)
    summary = {
        "throughput_ratio_heads_k64_vs_faster_whisper": round(heads_k64["x_realtime"] / best, 3),
        "throughput_ratio_base_vs_faster_whisper": round(results["api_base_c16"]["x_realtime"] / best, 3),
        "peer_best_configuration": best_name, "peer_best_x_realtime": best,
        "heads_k64_c16_x_realtime": heads_k64["x_realtime"], "base_c16_x_realtime": results["api_base_c16"]["x_realtime"],
        "p50_latency_ratio_4_clients": round(results["api_base_c4"]["p50_s"] / peer_c4_best["p50_s"], 3),
        "p95_latency_ratio_4_clients": round(results["api_base_c4"]["p95_s"] / peer_c4_best["p95_s"], 3),
        "p50_heads_k64_c4_ratio": round(results[f"api_heads_k{top_k}_c4"]["p50_s"] / peer_c4_best["p50_s"], 3),
        "longform_seconds": round(lf_seconds, 1),
        "longform_speed_x_realtime": longform["api_base"]["x_realtime"],
        "longform_head_speed_x_realtime": longform["api_head"]["x_realtime"],
        "longform_ratio_vs_faster_whisper": round(longform["api_base"]["x_realtime"]
                                                  / longform[lf_peer_name]["x_realtime"], 3),
        "longform_peer": lf_peer_name,
        "longform_wer": longform["api_base"]["wer"], "longform_wer_faster_whisper": longform[lf_peer_name]["wer"],
        "per_utterance_wer_real_recordings": per_utt_wer,
        "longform_wer_minus_per_utterance_wer": round(longform["api_base"]["wer"] - per_utt_wer, 4),
        "api_peak_rss_mb": api_rss, "faster_whisper_peak_rss_mb": peer_rss,
        "faster_whisper_batched_peak_rss_mb": batched_rss,
        "api_peak_rss_ratio_vs_faster_whisper": round(api_rss / peer_rss, 3),
        "head_load_cached_ms": engine.get("head_load_cached_ms"),
        "head_load_store_ms": engine.get("head_load_store_ms"),
        "head_load_source": "benchmarks/results/engine_concurrency.json (in-process; not measurable over HTTP)",
        "wer_delta_batched_vs_single": round(batched16["wer"] - single["wer"], 4),
        "texts_identical_batched_vs_single": f"{same_texts}/{len(single['texts'])}",
        "quick": args.quick,
    }
    for r in results.values():
        r["texts"] = r["texts"][: len(base_items)]
    report = {
        "benchmark": "serving", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": loadavg_at_start,
                    "loadavg_at_end": os.getloadavg()},
        "setup": {"utterances": len(base_items), "utterance_files": [Path(it[0]).name for it in base_items],
                  "references": [it[1] for it in base_items], "beam_size": 5, "api_torch_threads": 1,
                  "peer": "faster-whisper int8, cpu_threads 1 (batched pipeline: 2), beam 5, language en",
                  "heads": f"synthetic: the linear prior head perturbed per speaker (K up to {max(ks)})",
                  "head_artifact_bytes": info["head_artifact_bytes"], "ks": ks, "clients": client_counts,
                  "head_clients": head_clients, "longform_target_s": longform_target},
        "results": results, "longform": longform, "summary": summary,
        "run_seconds": round(time.perf_counter() - t_run, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\npeer's best: {best_name} {best}x real time; API peak RSS {api_rss} MB vs faster-whisper {peer_rss} MB "
          f"(batched pipeline {batched_rss} MB); run {report['run_seconds']} s; load at start {loadavg_at_start}")
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer-worker":
        peer_worker_main(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
