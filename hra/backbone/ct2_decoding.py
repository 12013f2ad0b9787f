"""Decoding with CTranslate2's C++ beam search over encoder output computed by the PyTorch encoder (heads applied).

CTranslate2's ``Whisper.generate`` accepts encoder output (B, T, D) of any length T instead of log-mel features, so
the encoder runs here in PyTorch with the HRA hook (heads in their context, the base in the 30-s window) and only the
decoder's beam search moves to C++: 1.6-2.0x faster than ``GuardedDecoder``'s Python beam search on one thread in
float32 (the output projection over the 51,864-token vocabulary is most of what remains), 4x in int8
(benchmarks/results/ct2_decoding.json).

What the Python decoder does, and its equivalent here:

- prompt ``<|startoftranscript|><|notimestamps|>``; the model's suppressed tokens, timestamps, ``<|startoftranscript|>``
  and ``<|notimestamps|>`` suppressed at every step, blank and end-of-text at the first (``suppress_tokens``,
  ``suppress_blank``); beam search with patience 1 (a sample is done once ``beam_size`` hypotheses finished).
  CTranslate2 ranks finished hypotheses by log-probability / tokens (end-of-text's log-probability counted, not its
  position), openai-whisper's (and the Python decoder's) by log-probability / (tokens + 1): every finished hypothesis
  is returned (``num_hypotheses = beam_size``) and re-ranked the Python way. One difference stays: openai-whisper
  finishes every end-of-text candidate ranked above the last hypothesis kept, CTranslate2 only those among the top
  ``beam_size``, so it sometimes searches on and finds a better-scoring hypothesis (1 of 16 real recordings).
- batch padding: each sample's encoder output is cut to its own positions (``frames``) and samples are decoded in
  groups of one length, so no padding is ever attended to (the Python decoder masks it; the same positions count).
- the length bound: ``max_length`` is the group's largest duration-based token budget; a sample that reaches its own
  budget is decoded again by the Python decoder (which stops at it, cutting loops first).
- loop cutting and the compression-ratio retry are Python's search-time guards: a result whose tokens loop anywhere
  (``repeated_tail`` on every prefix), or whose compression ratio is over the threshold, is decoded again by the
  Python decoder (``fallback``), which applies them. Both are rare on speech (none on the 16 real recordings, 2 of
  24 utterances of an accented voice the base cannot read).
- no speech: ``return_no_speech_prob`` (P(<|nocaptions|>) at the prompt's first position, as in Python) and the
  average log-probability (sum over tokens and end-of-text / (tokens + 1), from the returned score) with Whisper's
  rule and thresholds.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hra.backbone.decoding_rules import DecodeResult, DecodingOptions, repeated_tail, result_of, silenced
from hra.backbone.tokenizer import WhisperTokenizer
from hra.errors import BackboneUnavailable

logger = logging.getLogger(__name__)

# Decodes samples again with the Python decoder: sample indices of the batch -> their results, in that order.
Fallback = Callable[[list[int]], list[DecodeResult]]

WINDOW_POSITIONS = 1500  # encoder positions of Whisper's 30-s window


@dataclass(frozen=True)
class Ct2Options:
    """How the CTranslate2 decoder runs (the decoding itself follows ``DecodingOptions``).

    compute_type "float32" (default): the weights the PyTorch backbone uses, scores equal to 1e-4, the Python
    decoder's WER on every gate set (benchmarks/results/ct2_decoding.json). "int8" decodes ~2x faster again but moves
    hard utterances (8-12 of 24 accented-speaker utterances changed, WER -0.02 to +0.06 across runs): it fails the gate.
    ``threads``: CTranslate2's intra-op threads (None: torch's count when loaded). ``max_batch_positions``: the samples
    of one ``generate`` call hold at most this many encoder positions (B x T): 2 utterances in the 30-s window, 12 in a
    5-s context. Beam search replicates each sample's cross-attention keys and values per beam (float32 whatever the
    compute type): 92 MB per 30-s utterance at beam 5, so 4 windows per call made a runner's peak ~370 MB; 1 window
    per call cost 3 % more CPU time per utterance than 4 (16 real recordings, int16), 2 windows sit between.
    ``parallel_batches``: ``generate`` calls run at once (CTranslate2's ``inter_threads``; the replicas share the
    weights): as many as threads that decode at the same time (the serving engine's runners), else they queue.
    """

    compute_type: str = "float32"
    threads: int | None = None
    parallel_batches: int = 1
    device: str = "cpu"
    max_batch_positions: int = 2 * WINDOW_POSITIONS

    def describe(self) -> dict:
        return {"kind": "ctranslate2", "compute_type": self.compute_type, "device": self.device,
                "threads": self.threads, "parallel_batches": self.parallel_batches}

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 (None: torch's count)")
        if self.max_batch_positions < 1:
            raise ValueError("max_batch_positions must be >= 1")
        if self.parallel_batches < 1:
            raise ValueError("parallel_batches must be >= 1")


_LIVE_DECODERS: weakref.WeakSet[Ct2Decoder] = weakref.WeakSet()


@atexit.register
def _release_models() -> None:
    """Release CTranslate2's models before the interpreter tears down: a model finalized during teardown (a
    daemon thread's foundation, a module global) can destroy its C++ worker threads while they are still joinable,
    and the process then aborts ("terminate called without an active exception") after everything passed."""
    for decoder in list(_LIVE_DECODERS):
        try:
            decoder.model.unload_model()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class Ct2Decoder:
    """Guarded decoding of encoder output with ``ctranslate2.models.Whisper.generate`` (beam search in C++)."""

    def __init__(
        self, model_dir: str | Path, tokenizer: WhisperTokenizer, vocab_size: int, options: Ct2Options = Ct2Options()
    ) -> None:
        """``model_dir``: the CTranslate2 Whisper directory the PyTorch backbone was converted from (its decoder
        weights are the ones used here); ``vocab_size``: the decoder's output size (suppression covers every
        timestamp up to it)."""
        try:
            import ctranslate2
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BackboneUnavailable(
                "the CTranslate2 decoder needs the ctranslate2 package (pip install ctranslate2); "
                "or select the Python decoder (HRA_DECODER=python)"
            ) from exc
        self._ct2 = ctranslate2
        self.options = options
        self.tokenizer = tokenizer
        threads = options.threads if options.threads is not None else max(1, torch.get_num_threads())
        self.model = ctranslate2.models.Whisper(
            str(model_dir),
            device=options.device,
            compute_type=options.compute_type,
            intra_threads=threads,
            inter_threads=options.parallel_batches,
        )
        _LIVE_DECODERS.add(self)
        sp = tokenizer.special
        # The Python decoder's suppression: the model's list, every timestamp, the prompt's special tokens.
        self._suppress = sorted(set(tokenizer.suppress_ids) | set(range(sp.timestamp_begin, vocab_size))
                                | {sp.sot, sp.no_timestamps})
        # Samples decoded, and those decoded again in Python (guards): counters for benchmarks and logs.
        self.samples = 0
        self.python_fallbacks = 0

    def describe(self) -> dict:
        return self.options.describe()

    # -- decoding ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self,
        encoder_out: torch.Tensor,
        frames: torch.Tensor | None,
        durations_s: Sequence[float],
        options: DecodingOptions,
        fallback: Fallback | None = None,
    ) -> list[DecodeResult]:
        """encoder_out (B, T, D); frames (B,) valid positions (None: all T); one duration per sample.

        ``fallback(rows)`` decodes the given samples with the Python decoder: called for the samples the guards flag
        (loop, compression ratio, own token budget reached); without it those keep the CTranslate2 result, cut to
        the budget and the loop."""
        n = encoder_out.shape[0]
        if n != len(durations_s):
            raise ValueError(f"{n} encoder outputs but {len(durations_s)} durations")
        if n == 0:
            return []
        lengths = [int(f) for f in frames.tolist()] if frames is not None else [encoder_out.shape[1]] * n
        limits = [options.token_limit(d) for d in durations_s]
        raw = self.generate_raw(encoder_out, lengths, limits, options)
        results: list[DecodeResult] = []
        flagged: list[int] = []
        for b, (tokens, score, ns_prob) in enumerate(raw):
            result = self._finish(tokens, score, ns_prob, limits[b], options)
            if options.guards and self._needs_python(result, limits[b], options):
                flagged.append(b)
                if fallback is None:
                    result = self._cut(result, limits[b], options)
            results.append(result)
        self.samples += n
        self.python_fallbacks += len(flagged)
        if flagged and fallback is not None:
            logger.debug("CTranslate2 decoding: %d of %d samples decoded again in Python", len(flagged), n)
            for b, redone in zip(flagged, fallback(flagged)):
                results[b] = redone
        return [silenced(result, options) for result in results]

    def generate_raw(
        self,
        encoder_out: torch.Tensor,
        lengths: Sequence[int],
        limits: Sequence[int],
        options: DecodingOptions,
    ) -> list[tuple[list[int], float, float]]:
        """(tokens, score, P(no speech)) per sample, unguarded: samples grouped by their number of valid positions,
        each group in ``generate`` calls of at most ``max_batch_positions`` positions, ``max_length`` the call's
        largest token budget. ``score``: CTranslate2's (sum of log-probabilities / tokens)."""
        n = encoder_out.shape[0]
        groups: dict[int, list[int]] = {}
        for b in range(n):
            groups.setdefault(int(lengths[b]), []).append(b)
        out: list[tuple[list[int], float, float] | None] = [None] * n
        # Handed over from host memory (CTranslate2 copies it to its own device): on a GPU a (B, T, 384) copy is
        # negligible beside the search, and one code path serves every device.
        enc = encoder_out.detach().to("cpu", torch.float32)
        for t_len, rows in groups.items():
            per_call = max(1, self.options.max_batch_positions // max(1, t_len))
            for start in range(0, len(rows), per_call):
                part = rows[start : start + per_call]
                index = torch.tensor(part, device=enc.device)
                feats = enc.index_select(0, index)[:, :t_len].contiguous()
                max_tokens = max(limits[b] for b in part)
                for b, res in zip(part, self._generate(feats, max_tokens, options)):
                    out[b] = res
        return [r for r in out if r is not None]

    def _generate(
        self, feats: torch.Tensor, max_tokens: int, options: DecodingOptions
    ) -> list[tuple[list[int], float, float]]:
        array = np.ascontiguousarray(feats.numpy(), dtype=np.float32)
        view = self._ct2.StorageView.from_array(array)
        # generate() decodes at most min(max_length / 2, max_length - 1) tokens after <|notimestamps|>.
        results = self.model.generate(
            view,
            [self.tokenizer.prompt] * feats.shape[0],
            beam_size=options.beam_size,
            patience=1.0,
            num_hypotheses=options.beam_size,
            length_penalty=1.0,
            max_length=2 * max_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        del view, array
        out = []
        for r in results:
            # CTranslate2 ranks by sum / tokens; openai-whisper (and the Python decoder) by sum / (tokens + 1),
            # end-of-text counted: re-rank the finished hypotheses that way (sum = score x tokens).
            best = max(
                zip(r.sequences_ids, r.scores),
                key=lambda h: float(h[1]) * len(h[0]) / (len(h[0]) + 1),
            )
            out.append((list(best[0]), float(best[1]), float(r.no_speech_prob)))
        return out

    # -- guards -----------------------------------------------------------------------------------------------

    def _finish(
        self, tokens: list[int], score: float, ns_prob: float, limit: int, options: DecodingOptions
    ) -> DecodeResult:
        sum_lp = score * max(len(tokens), 1)  # length_penalty 1: score = sum / tokens
        reason = "length" if len(tokens) >= limit else "eot"
        return result_of(self.tokenizer, tokens, sum_lp / (len(tokens) + 1), ns_prob, reason)

    @staticmethod
    def _needs_python(result: DecodeResult, limit: int, options: DecodingOptions) -> bool:
        """The Python decoder's search-time guards would have acted: its own budget reached (or passed: the call's
        budget is the group's largest), a loop anywhere in the tokens, or a compression ratio over the threshold."""
        return (
            len(result.tokens) >= limit
            or first_loop_end(result.tokens, options) is not None
            or result.compression_ratio > options.compression_ratio_threshold
        )

    def _cut(self, result: DecodeResult, limit: int, options: DecodingOptions) -> DecodeResult:
        """Without a fallback: the tokens cut at the first loop (its copies dropped) and at the budget."""
        tokens = result.tokens[:limit]
        reason = result.stop_reason
        end = first_loop_end(tokens, options)
        if end is not None:
            tokens = tokens[: end - repeated_tail(tokens[:end], options)]
            reason = "loop"
        return result_of(self.tokenizer, tokens, result.avg_logprob, result.no_speech_prob, reason)


def first_loop_end(tokens: list[int], options: DecodingOptions) -> int | None:
    """The first prefix length at which the Python decoder's loop guard would have stopped ``tokens`` (None: never)."""
    for end in range(2, len(tokens) + 1):
        if repeated_tail(tokens[:end], options):
            return end
    return None
