"""The transcription engine (batching across concurrent requests) and the head cache, both used by ``HRAMLService``.

Thread model. Callers (FastAPI's thread pool for the sync routes, a Celery worker's task thread, long-form
transcription submitting a recording's chunks) put one item per utterance on a queue and block on their futures.
``runners`` engine threads do all model work. A runner takes the first item waiting, then whatever else is already
queued and whatever arrives until ``max_wait_s`` after that first item was queued, up to ``max_batch_size`` items, or
up to its share of what is waiting while other runners are idle (so that they take the rest); it splits them into
groups (``group`` is given per item: the base model and heads run in different encoder contexts, so they cannot
share a pass), runs one ``run(waveforms, heads)`` call per group and resolves each item's future. No lock is held
around a request: a request only waits in the queue (at most ``max_wait_s`` once a runner is idle) and then for the
batch it joined. While batches run, new requests accumulate and form the next ones.

Why several runners: one model pass runs on one core (one torch thread: more intra-op threads contend badly with
whatever else runs on a small machine), and per utterance a pass of 4 costs what a pass of 16 does, so two runners
with half the queue each use two cores (1.65-1.78x the throughput of one on the 2-core machine; see
``engine_threads`` in the settings). ``run`` must therefore be safe to call from several threads at once (torch
inference and CTranslate2 with as many ``inter_threads`` are).

Errors. Heads are parsed by the caller before anything is queued, so a bad artifact fails its own request only.
If a group's pass raises anyway (e.g. an utterance the backbone refuses), its items are run again one at a time,
so the exception reaches only the request whose utterance caused it.

This module knows nothing of ``hra`` or torch: ``run`` and ``on_thread_start`` come from ``app.ml``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# waveforms, heads -> one result per waveform (texts, or whatever the model's results are), in order.
RunBatch = Callable[[list[Any], list[Any]], Sequence[Any]]


# ---- head cache -------------------------------------------------------------------------------------------------


class HeadCache:
    """Parsed heads by an immutable key, least recently used first out once ``max_bytes`` is exceeded.

    Keys: ``id:<head id>`` (a head row's artifact never changes; a new version is a new id) or ``sha256:<digest>``
    for artifacts that come without an id. ``get_or_load`` runs ``load() -> (value, size_bytes)`` on a miss, once
    per key however many threads miss it together (the others wait and count a hit). A value larger than the whole
    cache is returned but not kept. Thread-safe.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._dropped_while_loading: set[str] = set()
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # entries pushed out by the byte bound (not explicit ``evict`` calls)

    def _hit(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def get_or_load(self, key: str, load: Callable[[], tuple[Any, int]]) -> Any:
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                value = self._hit(key)  # loaded by a thread that missed just before us
                if value is not None:
                    return value
                self.misses += 1
                self._dropped_while_loading.discard(key)
            try:
                value, size = load()
            finally:
                with self._lock:
                    if self._loading.get(key) is key_lock:
                        del self._loading[key]
            with self._lock:
                if key in self._dropped_while_loading:  # evicted (erased) while we were loading it: do not keep
                    self._dropped_while_loading.discard(key)
                else:
                    self._put(key, value, int(size))
            return value

    def _put(self, key: str, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
            self.evictions += 1

    def evict(self, key: str) -> bool:
        """Drop ``key`` now (and do not keep it if a load of it is under way); True when an entry was dropped."""
        with self._lock:
            if key in self._loading:
                self._dropped_while_loading.add(key)
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry[1]
            return True

    def clear(self) -> None:
        with self._lock:
            self._dropped_while_loading.update(self._loading)
            self._entries.clear()
            self._bytes = 0

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }


# ---- batching engine --------------------------------------------------------------------------------------------


@dataclass
class _Item:
    waveform: Any
    head: Any
    group: Hashable
    queued_at: float
    future: Future = field(default_factory=Future)


_STOP = object()


class TranscriptionEngine:
    """Batches ``(waveform, head)`` items from many threads into one ``run`` call per group (see the module)."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        on_thread_start: Callable[[], None] | None = None,
        name: str = "hra-transcription-engine",
        runners: int = 1,
        group_batch_sizes: Mapping[Hashable, int] | None = None,
    ) -> None:
        """``group_batch_sizes``: a smaller ``max_batch_size`` for batches whose first item is of that group (a
        group whose per-utterance cost does not fall with the batch only waits longer in a larger one)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._group_batch_sizes = dict(group_batch_sizes or {})
        if any(size < 1 for size in self._group_batch_sizes.values()):
            raise ValueError("group batch sizes must be >= 1")
        if runners < 1:
            raise ValueError("runners must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self._run = run
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self._on_thread_start = on_thread_start
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # closing, the idle count and the counters
        self._closed = False
        self.runners = int(runners)
        self._idle = 0  # runners waiting for a first item
        # Counters.
        self.batches = 0
        self.passes = 0
        self.items = 0
        self.largest_batch = 0
        self.retried_groups = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(self.runners)
        ]
        for thread in self._threads:
            thread.start()

    # ---- callers ----

    def submit(self, waveform: Any, head: Any = None, group: Hashable = None) -> Future:
        item = _Item(waveform, head, group, time.monotonic())
        with self._lock:
            if self._closed:
                raise RuntimeError("the transcription engine is closed")
            self._queue.put(item)
        return item.future

    def transcribe(
        self, waveforms: Sequence[Any], heads: Sequence[Any], groups: Sequence[Hashable] | None = None
    ) -> list[Any]:
        """Results in the caller's order; raises the first failed item's exception (after every item has ended)."""
        if len(waveforms) != len(heads) or (groups is not None and len(groups) != len(waveforms)):
            raise ValueError(f"{len(waveforms)} waveforms but {len(heads)} heads")
        groups = groups if groups is not None else [None] * len(waveforms)
        futures = [self.submit(w, h, g) for w, h, g in zip(waveforms, heads, groups)]
        for f in futures:
            f.exception()  # wait for all, so that no item of this call is still running when we return or raise
        return [f.result() for f in futures]

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking items; items already queued are still run. Waits for the engine threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)  # one per runner, queued behind every item
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "passes": self.passes,
            "items": self.items,
            "mean_batch_size": round(self.items / self.batches, 3) if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "retried_groups": self.retried_groups,
            "queued": self._queue.qsize(),
            "max_batch_size": self.max_batch_size,
            "group_batch_sizes": dict(self._group_batch_sizes),
            "max_wait_ms": self.max_wait_s * 1000.0,
            "runners": self.runners,
        }

    # ---- engine threads ----

    def _loop(self) -> None:
        if self._on_thread_start is not None:
            try:
                self._on_thread_start()
            except Exception:  # a failed tuning step must not stop serving
                logger.exception("transcription engine: start-up hook failed")
        stopping = False
        while not stopping:
            with self._lock:
                self._idle += 1
            first = self._queue.get()
            with self._lock:
                self._idle -= 1
            if first is _STOP:
                break
            batch = [first]
            deadline = first.queued_at + self.max_wait_s
            cap = min(self.max_batch_size, self._group_batch_sizes.get(first.group, self.max_batch_size))
            while len(batch) < self._limit(len(batch), cap):
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(batch)

    def _limit(self, taken: int, cap: int) -> int:
        """How many items this runner's batch may hold, given ``taken`` so far: ``cap`` (the batch size for its
        first item's group) while every other runner is busy (the window gathers what arrives); else its share of
        what is waiting, so that the idle runners take the rest instead of waiting behind this batch."""
        if cap <= taken:
            return cap
        with self._lock:
            others_idle = self._idle
        if others_idle == 0:
            return cap
        waiting = taken + self._queue.qsize()
        return min(cap, max(1, -(-waiting // (1 + others_idle))))

    def _run_batch(self, batch: list[_Item]) -> None:
        with self._lock:
            self.batches += 1
            self.items += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
        groups: dict[Hashable, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.group, []).append(item)
        for items in groups.values():
            live = [i for i in items if i.future.set_running_or_notify_cancel()]
            if live:
                self._run_group(live)

    def _count(self, passes: int = 0, retried_groups: int = 0) -> None:
        with self._lock:
            self.passes += passes
            self.retried_groups += retried_groups

    def _run_group(self, items: list[_Item]) -> None:
        self._count(passes=1)
        try:
            texts = list(self._run([i.waveform for i in items], [i.head for i in items]))
            if len(texts) != len(items):
                raise RuntimeError(f"the model returned {len(texts)} results for {len(items)} utterances")
        except BaseException as exc:  # noqa: BLE001 - every failure must reach a caller, never kill the thread
            if len(items) == 1:
                items[0].future.set_exception(exc)
                return
            self._count(retried_groups=1)
            logger.warning("transcription engine: a batch of %d failed (%r); running its items one by one",
                           len(items), exc)
            for item in items:
                self._count(passes=1)
                try:
                    item.future.set_result(self._run([item.waveform], [item.head])[0])
                except BaseException as one:  # noqa: BLE001
                    item.future.set_exception(one)
            return
        for item, text in zip(items, texts):
            item.future.set_result(text)
