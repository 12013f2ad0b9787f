"""The transcription engine (batching across concurrent requests) and the head cache (app/engine.py), alone and
inside ``HRAMLService``: with the tiny fake backbone of tests/hra (fast), with the route (a promotion is served from
the next request on; a cached head skips the object store), and with the real Whisper tiny.en (batched texts equal
one-at-a-time texts)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from app.engine import HeadCache, TranscriptionEngine
from app.hra_ml import HRAMLService
from app.ml import HeadRef, IncompatibleHead
from storage.errors import ObjectNotFound
from storage.models import Head, HeadStatus
from tests.app.fakes import FakeML, tone
from tests.app.support import make_settings
from tests.hra.fake_backbone import fake_utterances, make_fake_foundation

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def run_threads(n: int, target) -> list:
    """``target(i)`` in ``n`` threads released together; their results (or exceptions) by index."""
    barrier = threading.Barrier(n)
    out: list = [None] * n

    def body(i: int) -> None:
        barrier.wait()
        try:
            out[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            out[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# ---- the engine alone ------------------------------------------------------------------------------------------


class Recorder:
    """A ``run`` for the engine: records each pass; "bad" waveforms make a pass raise."""

    def __init__(self, delay: float = 0.0) -> None:
        self.passes: list[tuple[list, list]] = []
        self.delay = delay

    def __call__(self, waveforms: list, heads: list) -> list[str]:
        self.passes.append((list(waveforms), list(heads)))
        time.sleep(self.delay)
        if "bad" in waveforms:
            raise ValueError("bad utterance")
        return [f"{w}|{h}" for w, h in zip(waveforms, heads)]


def test_concurrent_callers_get_their_own_results_from_shared_batches():
    run = Recorder(delay=0.01)
    engine = TranscriptionEngine(run, max_batch_size=16, max_wait_s=0.2)
    try:
        results = run_threads(8, lambda i: engine.transcribe([f"w{i}a", f"w{i}b"], [f"h{i}", None], ["h", "b"]))
    finally:
        engine.close()
    assert results == [[f"w{i}a|h{i}", f"w{i}b|None"] for i in range(8)]
    assert engine.batches < 8 and engine.largest_batch > 2  # requests of different threads shared passes
    for waveforms, heads in run.passes:  # a pass is all base or all heads
        assert len({h is None for h in heads}) == 1


def test_batches_are_bounded_and_groups_run_as_separate_passes():
    run = Recorder()
    engine = TranscriptionEngine(run, max_batch_size=4, max_wait_s=0.05)
    try:
        texts = engine.transcribe([f"w{i}" for i in range(10)], [None] * 10, ["g1", "g2"] * 5)
    finally:
        engine.close()
    assert texts == [f"w{i}|None" for i in range(10)]
    assert engine.largest_batch <= 4 and engine.items == 10
    assert all(len(w) <= 4 for w, _ in run.passes)
    assert all(len({int(x[1:]) % 2 for x in w}) == 1 for w, _ in run.passes)  # g1 and g2 never share a pass


def test_a_failing_utterance_fails_only_its_caller():
    run = Recorder(delay=0.01)
    engine = TranscriptionEngine(run, max_batch_size=16, max_wait_s=0.2)
    try:
        results = run_threads(4, lambda i: engine.transcribe(["bad" if i == 2 else f"w{i}"], [None]))
    finally:
        engine.close()
    assert isinstance(results[2], ValueError)
    assert [results[i] for i in (0, 1, 3)] == [["w0|None"], ["w1|None"], ["w3|None"]]
    assert engine.retried_groups >= 1


def test_a_lone_request_waits_at_most_the_batch_window_and_a_closed_engine_refuses():
    engine = TranscriptionEngine(Recorder(), max_batch_size=16, max_wait_s=0.0)
    started = time.perf_counter()
    assert engine.transcribe(["x"], [None]) == ["x|None"]
    assert time.perf_counter() - started < 1.0
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit("y")


def test_two_runners_split_a_waiting_queue_and_run_at_the_same_time():
    running, most, passes, lock = [0], [0], [], threading.Lock()

    def run(waveforms: list, heads: list) -> list[str]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            passes.append((threading.current_thread().name, len(waveforms)))
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return [f"{w}|{h}" for w, h in zip(waveforms, heads)]

    engine = TranscriptionEngine(run, max_batch_size=16, max_wait_s=0.0, runners=2)
    try:
        time.sleep(0.1)  # both runners idle, waiting
        futures = [engine.submit(f"w{i}") for i in range(16)]
        assert [f.result(10) for f in futures] == [f"w{i}|None" for i in range(16)]
        assert engine.stats()["runners"] == 2
    finally:
        engine.close()
    assert most[0] == 2, passes  # two passes ran at once
    assert len({name for name, _ in passes}) == 2 and max(size for _, size in passes) < 16, passes
    assert sum(size for _, size in passes) == 16 and engine.items == 16


def held_run() -> tuple:
    """A ``run`` that records each pass and holds the one with "long" until ``release`` is set."""
    release, passes = threading.Event(), []

    def run(waveforms: list, heads: list) -> list[str]:
        passes.append(list(waveforms))
        if "long" in waveforms:
            assert release.wait(10)
        return [f"{w}|{h}" for w, h in zip(waveforms, heads)]

    return run, release, passes


def test_with_the_other_runner_busy_a_runner_gathers_arrivals_for_the_whole_window():
    run, release, passes = held_run()
    engine = TranscriptionEngine(run, max_batch_size=16, max_wait_s=0.5, runners=2)
    try:
        long = engine.submit("long")
        time.sleep(0.1)  # one runner is now busy with it
        futures = []
        for i in range(3):
            futures.append(engine.submit(f"w{i}"))
            time.sleep(0.03)  # arriving one by one, within the window
        assert [f.result(10) for f in futures] == ["w0|None", "w1|None", "w2|None"]
        release.set()
        assert long.result(10) == "long|None"
    finally:
        release.set()
        engine.close()
    assert ["w0", "w1", "w2"] in passes, passes  # one pass, not three


def test_closing_an_engine_of_several_runners_runs_what_is_queued_and_stops_them_all():
    run = Recorder(delay=0.02)
    engine = TranscriptionEngine(run, max_batch_size=2, max_wait_s=0.0, runners=3)
    futures = [engine.submit(f"w{i}") for i in range(9)]
    engine.close()
    assert [f.result(0) for f in futures] == [f"w{i}|None" for i in range(9)]
    assert not any(thread.is_alive() for thread in engine._threads)


# ---- the head cache alone --------------------------------------------------------------------------------------


def test_the_cache_counts_hits_and_misses_and_evicts_least_recently_used_by_bytes():
    cache = HeadCache(max_bytes=250)
    loads = []

    def loader(name, size):
        return lambda: (loads.append(name) or name, size)

    assert cache.get_or_load("a", loader("a", 100)) == "a"
    assert cache.get_or_load("b", loader("b", 100)) == "b"
    assert cache.get_or_load("a", loader("a", 100)) == "a"  # hit: "b" is now the least recently used
    assert cache.get_or_load("c", loader("c", 100)) == "c"  # 300 > 250: "b" goes
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats() == {"hits": 1, "misses": 3, "evictions": 1, "entries": 2, "bytes": 200, "max_bytes": 250}
    assert cache.get_or_load("huge", loader("huge", 1000)) == "huge"  # larger than the cache: served, not kept
    assert "huge" not in cache and cache.stats()["bytes"] == 200
    assert cache.evict("a") and not cache.evict("a")
    cache.get_or_load("a", loader("a", 100))
    assert loads == ["a", "b", "c", "huge", "a"]


def test_threads_missing_the_same_head_load_it_once():
    cache = HeadCache(max_bytes=10_000)
    loads = []

    def slow_load():
        loads.append(1)
        time.sleep(0.1)
        return "head", 10

    assert run_threads(8, lambda i: cache.get_or_load("id:1", slow_load)) == ["head"] * 8
    assert len(loads) == 1 and cache.stats()["misses"] == 1 and cache.stats()["hits"] == 7


def test_a_head_evicted_while_it_loads_is_not_kept():
    cache = HeadCache(max_bytes=10_000)
    started = threading.Event()

    def slow_load():
        started.set()
        time.sleep(0.2)
        return "head", 10

    loader = threading.Thread(target=lambda: cache.get_or_load("id:1", slow_load))
    loader.start()
    started.wait(5)
    cache.evict("id:1")  # erasure while a request is fetching the artifact
    loader.join(5)
    assert "id:1" not in cache


# ---- HRAMLService on the fake backbone -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foundation():
    return make_fake_foundation()


@pytest.fixture(scope="module")
def artifacts(foundation):
    """Two distinct trained-looking heads as artifacts (random last projections)."""
    from hra.adapter.artifacts import head_to_bytes

    out = []
    for seed in (1, 2):
        head = foundation.new_head("linear", seed=seed)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
        out.append(head_to_bytes(head, foundation, {"seed": seed}))
    return out


@pytest.fixture
def service(tmp_path, foundation):
    settings = make_settings(tmp_path, "sqlite://", engine_batch_wait_ms=100.0, engine_max_batch_size=16)
    s = HRAMLService(settings, loader=lambda: foundation)
    yield s
    s.close()


def test_service_batches_concurrent_callers_and_matches_one_at_a_time(service, foundation, artifacts):
    from hra.adapter.artifacts import head_from_bytes
    from hra.inference import transcribe

    waves = [w for w, _ in fake_utterances(6, seed=7)]
    choices = [None, artifacts[0], artifacts[1]]
    heads = [choices[i % 3] for i in range(6)]
    parsed = [None if a is None else head_from_bytes(a, foundation) for a in heads]
    alone = [transcribe(foundation, [w], [h])[0] for w, h in zip(waves, parsed)]
    results = run_threads(6, lambda i: service.transcribe([waves[i]], [heads[i]]))
    assert [r[0] for r in results] == alone
    assert service.transcribe(waves, heads) == alone  # one caller, mixed heads
    stats = service.engine_stats()
    assert stats["largest_batch"] > 1 and stats["batches"] < 12


def test_a_bad_head_fails_only_the_request_that_brought_it(service, artifacts):
    waves = [w for w, _ in fake_utterances(4, seed=8)]
    heads = [artifacts[0], b"not a head", None, artifacts[1]]
    results = run_threads(4, lambda i: service.transcribe([waves[i]], [heads[i]]))
    assert isinstance(results[1], IncompatibleHead)
    assert all(isinstance(results[i], list) and len(results[i]) == 1 for i in (0, 2, 3))


def test_a_head_ref_is_loaded_once_then_served_from_the_cache_until_evicted(service, artifacts):
    loads = []

    def load():
        loads.append(1)
        return artifacts[0]

    wave = [fake_utterances(1, seed=9)[0][0]]
    head_id = str(uuid.uuid4())
    first = service.transcribe(wave * 3, [HeadRef(head_id, load)] * 3)  # one look-up for the call's chunks
    assert service.transcribe(wave, [HeadRef(head_id, load)]) == first[:1]
    assert len(loads) == 1
    stats = service.cache_stats()
    assert (stats["misses"], stats["hits"], stats["entries"]) == (1, 1, 1) and stats["bytes"] > 0
    assert service.evict(head_id) and service.cache_stats()["entries"] == 0
    service.transcribe(wave, [HeadRef(head_id, load)])
    assert len(loads) == 2


def test_store_errors_from_a_head_ref_reach_the_caller(service):
    def missing():
        raise ObjectNotFound("gone")

    with pytest.raises(ObjectNotFound):
        service.transcribe([fake_utterances(1, seed=9)[0][0]], [HeadRef("x", missing)])


def test_the_cache_is_bounded_by_the_settings_bytes(tmp_path, foundation, artifacts):
    service = HRAMLService(make_settings(tmp_path, "sqlite://", head_cache_bytes=1), loader=lambda: foundation)
    try:
        wave = [fake_utterances(1, seed=9)[0][0]]
        service.transcribe(wave, [artifacts[0]])
        service.transcribe(wave, [artifacts[0]])
        assert service.cache_stats()["entries"] == 0 and service.cache_stats()["misses"] == 2
    finally:
        service.close()


# ---- the route: HeadRef by head id, promotion served from the next request ---------------------------------


class CachingFakeML(FakeML):
    """FakeML that keeps artifacts by ``HeadRef.id`` like ``HRAMLService`` does (counting store fetches)."""

    def __init__(self) -> None:
        super().__init__()
        self.cached: dict[str, bytes] = {}
        self.fetches: list[str] = []

    def transcribe(self, waveforms, heads):
        resolved = []
        for h in heads:
            if isinstance(h, HeadRef):
                if h.id not in self.cached:
                    self.fetches.append(h.id)
                    self.cached[h.id] = h.load()
                h = self.cached[h.id]
            resolved.append(h)
        return super().transcribe(waveforms, resolved)


@pytest.fixture
def ml() -> FakeML:  # overrides tests/app/conftest.py's for the route tests of this module
    return CachingFakeML()


def test_route_skips_the_store_on_a_hit_and_serves_a_promotion_from_the_next_request(client, seeded, services, ml):
    from tests.app.api.test_heads import promote_a_head

    path = f"/v1/speakers/{seeded.speaker_id}/transcriptions"
    audio = tone(1.0, freq=3000)
    ml.learn(audio, "good morning to you all")

    def post():
        response = client.post(path, files={"audio": ("x.wav", audio, "audio/wav")})
        assert response.status_code == 200, response.text
        return response.json()

    ml.next_quality = 0.8
    first = promote_a_head(client, services, seeded)
    assert post() == {"text": "good morning to you zzz", "head_id": first}
    with services.session_factory() as db:  # the artifact is gone: a hit never reads the store
        services.object_store.delete(db.get(Head, uuid.UUID(first)).object_key)
    assert post() == {"text": "good morning to you zzz", "head_id": first}
    assert ml.fetches == [first]

    with services.session_factory() as db:  # a second version goes into service (what promotion writes)
        old = db.get(Head, uuid.UUID(first))
        old.status = HeadStatus.retired
        db.flush()
        second = Head(
            speaker_id=old.speaker_id, version=old.version + 1, head_type=old.head_type, status=HeadStatus.in_service,
            object_key=old.object_key.replace(first, "v2"), sha256="0" * 64, size_bytes=1, parameters=1,
            backbone_fingerprint=old.backbone_fingerprint, controller_fingerprint=old.controller_fingerprint,
        )
        db.add(second)
        db.flush()
        second_id = str(second.id)
        services.object_store.put(second.object_key, json.dumps({"foundation": "f" * 64, "quality": 1.0}).encode())
        db.commit()
    assert post() == {"text": "good morning to you all", "head_id": second_id}
    assert ml.fetches == [first, second_id]


# ---- the real model --------------------------------------------------------------------------------------------


def real_waveforms(service: HRAMLService, names: list[str]) -> list:
    folder = REPO / "benchmarks" / "data" / "real_speech"
    return [service.decode_audio((folder / name).read_bytes()).waveform for name in names]


@pytest.mark.slow
def test_batched_equals_one_at_a_time_with_the_real_model(tmp_path):
    from hra.adapter.artifacts import head_from_bytes, head_to_bytes
    from hra.foundation import load_foundation
    from hra.inference import transcribe
    from hra.training.head import load_prior_head

    real = load_foundation(device="cpu", beam_size=5)
    prior = load_prior_head(real, "linear")
    perturbed = load_prior_head(real, "linear")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in perturbed.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.detach().abs().mean() * 0.5)
    artifacts = [None, head_to_bytes(prior, real, {}), head_to_bytes(perturbed, real, {})]
    service = HRAMLService(
        make_settings(tmp_path, "sqlite://", engine_batch_wait_ms=300.0, engine_max_batch_size=16, torch_threads=1),
        loader=lambda: real,
    )
    try:
        names = ["cards_001.flac", "librivox_0880.flac", "asterisk_dir-nomore.flac", "librivox_0890.flac"]
        waves = real_waveforms(service, names)
        items = [(w, a) for w in waves for a in artifacts]  # 12 utterances: base, prior head, perturbed head
        alone = [
            transcribe(real, [w], [None if a is None else head_from_bytes(a, real)])[0] for w, a in items
        ]
        assert len(set(alone)) > 4  # the heads change the text: the head path is not the base in disguise
        together = run_threads(len(waves), lambda i: service.transcribe([waves[i]] * 3, artifacts))
        assert [t for texts in together for t in texts] == alone  # exact text (the same tokens decoded)
        stats = service.engine_stats()
        assert stats["largest_batch"] >= 6, stats  # threads' requests shared batches
    finally:
        service.close()


def test_a_dropped_service_is_collected_and_its_engine_threads_end(tmp_path, foundation):
    import gc
    import weakref

    service = HRAMLService(make_settings(tmp_path, "sqlite://"), loader=lambda: foundation)
    service.transcribe([fake_utterances(1, seed=9)[0][0]], [None])
    threads, alive = service._engine._threads, weakref.ref(service)
    assert len(threads) == service._settings.engine_threads
    del service
    gc.collect()
    assert alive() is None
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)


def test_a_batch_that_starts_with_a_group_of_smaller_batch_size_holds_at_most_that_many():
    """``group_batch_sizes``: with the other runner busy, a batch whose first item is "base" (size 1) takes that item
    alone although more are queued; one whose first item is a head gathers up to ``max_batch_size``."""
    run, release, passes = held_run()
    engine = TranscriptionEngine(run, max_batch_size=8, max_wait_s=0.3, runners=2, group_batch_sizes={"base": 1})
    try:
        long = engine.submit("long", group="heads")
        time.sleep(0.1)  # one runner is now busy with it
        base = [engine.submit(f"b{i}", group="base") for i in range(3)]
        assert [f.result(10) for f in base] == ["b0|None", "b1|None", "b2|None"]
        heads = [engine.submit(f"h{i}", "head", group="heads") for i in range(3)]
        assert [f.result(10) for f in heads] == ["h0|head", "h1|head", "h2|head"]
        release.set()
        assert long.result(10) == "long|None"
    finally:
        release.set()
        engine.close()
    assert ["b0"] in passes and ["b1"] in passes and ["b2"] in passes, passes
    assert ["h0", "h1", "h2"] in passes, passes
    assert engine.stats()["group_batch_sizes"] == {"base": 1}
    with pytest.raises(ValueError, match="group batch sizes"):
        TranscriptionEngine(run, group_batch_sizes={"base": 0})
