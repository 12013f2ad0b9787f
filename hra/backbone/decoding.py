"""Guarded batched decoding for the Whisper decoder: beam search or greedy (KV cache, finished rows dropped).

Greedy decoding (``beam_size=1``) reproduces faster-whisper's ``beam_size=1, temperature=0`` tokens: prompt
``<|startoftranscript|><|notimestamps|>``, the model's suppressed tokens at every step, blank and
end-of-text suppressed at the first step. Beam search (``beam_size > 1``, the default) follows openai-whisper's
``BeamSearchDecoder`` with patience 1: each step extends every live hypothesis by its ``beam_size + 1`` best
tokens, keeps the ``beam_size`` best unfinished ones per sample, and a sample is done once ``beam_size``
hypotheses have finished; the winner has the best log-probability per token (end-of-text included).
Whisper invents text and loops on speech it cannot follow, so the guards (``DecodingOptions.guards``) add:

- a length bound from the audio duration (``max_tokens_per_second * duration + extra_tokens``);
- loop cutting: when the generated tail (of any hypothesis) is one span repeated consecutively (twice for spans of
  ``min_phrase_period`` tokens or more, a repeated phrase or sentence; ``max_repeats`` times for spans of
  ``min_long_period`` tokens or more; ``max_short_repeats`` times for shorter ones, "no, no, no"), decoding
  stops and the repeated copies are cut, keeping one;
- a compression-ratio check (gzip ratio of the text > ``compression_ratio_threshold``): the sample is
  decoded again with repeated token trigrams banned (a deterministic stand-in for Whisper's temperature
  fallback); if the ratio is still too high, the text is cut to its longest prefix below the threshold;
- no-speech handling: empty text when P(<|nocaptions|>) at the first position > ``no_speech_threshold`` and
  the average log-probability < ``logprob_threshold`` (Whisper's rule).

The options, the result and the rules both decoders share are in ``hra.backbone.decoding_rules``.
"""

from __future__ import annotations

import math

import torch

from hra.backbone.base import DecoderHook
from hra.backbone.decoding_rules import (
    DecodeResult,
    DecodingOptions,
    StopReason,
    compression_ratio,
    repeated_tail,
    result_of,
    silenced,
)
from hra.backbone.tokenizer import WhisperTokenizer
from hra.backbone.whisper_model import TextDecoder, key_padding_mask


class GuardedDecoder:
    """Batched guarded decoding (beam search or greedy) with a KV cache over a frozen ``TextDecoder``."""

    def __init__(self, decoder: TextDecoder, tokenizer: WhisperTokenizer, options: DecodingOptions) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.options = options
        vocab = decoder.token_embedding.num_embeddings
        sp = tokenizer.special
        suppress = torch.zeros(vocab)
        ids = [i for i in tokenizer.suppress_ids if 0 <= i < vocab]
        suppress[ids] = -math.inf
        suppress[sp.timestamp_begin :] = -math.inf  # no timestamps after <|notimestamps|>
        suppress[sp.sot] = -math.inf
        suppress[sp.no_timestamps] = -math.inf
        begin = suppress.clone()
        begin[list(tokenizer.suppress_ids_begin)] = -math.inf
        device = decoder.token_embedding.weight.device
        self.suppress = suppress.to(device)
        self.suppress_begin = begin.to(device)

    @torch.inference_mode()
    def decode(
        self,
        encoder_out: torch.Tensor,
        frames: torch.Tensor | None,
        durations_s: list[float],
        hook: DecoderHook | None = None,
    ) -> list[DecodeResult]:
        """encoder_out (B, T, D); frames (B,) valid positions or None; one duration per sample; ``hook``: the
        decoder layers' hook for the batch (per-sample state; ``select`` follows the batch as rows finish)."""
        if encoder_out.shape[0] != len(durations_s):
            raise ValueError(f"{encoder_out.shape[0]} encoder outputs but {len(durations_s)} durations")
        if encoder_out.shape[0] == 0:
            return []
        opts = self.options
        limits = [opts.token_limit(d) for d in durations_s]
        if opts.beam_size > 1:
            raw = []
            per_chunk = max(1, opts.max_beam_rows // opts.beam_size)
            for start in range(0, len(limits), per_chunk):
                stop = min(len(limits), start + per_chunk)
                raw += self._beam(
                    encoder_out[start:stop],
                    frames[start:stop] if frames is not None else None,
                    limits[start:stop],
                    hook=hook.select(list(range(start, stop))) if hook is not None else None,
                )
        else:
            raw = self._greedy(encoder_out, frames, limits, no_repeat_ngram=0, hook=hook)
        results = []
        for b, (tokens, sum_lp, ns_prob, reason) in enumerate(raw):
            result = self._finish(tokens, sum_lp, ns_prob, reason)
            if opts.guards and result.compression_ratio > opts.compression_ratio_threshold:
                enc_b = encoder_out[b : b + 1]
                fr_b = frames[b : b + 1] if frames is not None else None
                hook_b = hook.select([b]) if hook is not None else None
                tokens2, sum2, _, reason2 = self._greedy(
                    enc_b, fr_b, [limits[b]], opts.fallback_no_repeat_ngram, hook=hook_b
                )[0]
                retry = self._finish(tokens2, sum2, ns_prob, reason2, fallback=True)
                result = retry if retry.compression_ratio < result.compression_ratio else result
                if result.compression_ratio > opts.compression_ratio_threshold:
                    result = self._cut_to_ratio(result)
            results.append(silenced(result, opts))
        return results

    def _finish(
        self, tokens: list[int], sum_lp: float, ns_prob: float, reason: StopReason, fallback: bool = False
    ) -> DecodeResult:
        return result_of(self.tokenizer, tokens, sum_lp / (len(tokens) + 1), ns_prob, reason, fallback)

    def _cut_to_ratio(self, result: DecodeResult) -> DecodeResult:
        threshold = self.options.compression_ratio_threshold
        tokens = result.tokens
        lo, hi = 0, len(tokens)  # longest prefix whose ratio stays under the threshold (ratio ~ monotone)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if compression_ratio(self.tokenizer.decode(tokens[:mid])) <= threshold:
                lo = mid
            else:
                hi = mid - 1
        return result_of(
            self.tokenizer, tokens[:lo], result.avg_logprob, result.no_speech_prob, "loop", result.fallback
        )

    def _prompt_step(
        self, encoder_out: torch.Tensor, frames: torch.Tensor | None, hook: DecoderHook | None
    ) -> tuple[list, torch.Tensor | None, list, list[float], torch.Tensor]:
        """The prompt through the decoder -> (cross-attention K/V, cross mask, KV cache, P(no speech) per sample,
        the last position's logits (B, V))."""
        b_total, t_len, _ = encoder_out.shape
        cross_kv = self.decoder.cross_kv(encoder_out)
        cross_mask = key_padding_mask(frames, t_len)
        prompt = torch.tensor([self.tokenizer.prompt] * b_total, device=encoder_out.device)
        logits, cache = self.decoder(prompt, cross_kv, cross_mask, hook=hook)
        no_speech = torch.softmax(logits[:, 0].float(), dim=-1)[:, self.tokenizer.special.no_speech].tolist()
        return cross_kv, cross_mask, cache, no_speech, logits[:, -1]

    def _scores(self, step_logits: torch.Tensor, step: int) -> torch.Tensor:
        """(R, V) logits -> float32 scores with the suppressed tokens at -inf (blank and end-of-text at step 0)."""
        return step_logits.float() + (self.suppress_begin if step == 0 else self.suppress)

    def _greedy(
        self,
        encoder_out: torch.Tensor,
        frames: torch.Tensor | None,
        limits: list[int],
        no_repeat_ngram: int,
        hook: DecoderHook | None = None,
    ) -> list[tuple[list[int], float, float, StopReason]]:
        sp = self.tokenizer.special
        b_total = encoder_out.shape[0]
        device = encoder_out.device
        cross_kv, cross_mask, cache, no_speech, step_logits = self._prompt_step(encoder_out, frames, hook)

        tokens: list[list[int]] = [[] for _ in range(b_total)]
        sum_lp = [0.0] * b_total
        reasons: list[StopReason | None] = [None] * b_total
        active = list(range(b_total))  # rows of the current (compacted) batch -> sample index
        step = 0
        while active:
            scores = self._scores(step_logits, step)
            if no_repeat_ngram:
                for row, b in enumerate(active):
                    for banned in _banned_ngram_tokens(tokens[b], no_repeat_ngram):
                        scores[row, banned] = -math.inf
            logprobs = torch.log_softmax(scores, dim=-1)
            best = scores.argmax(dim=-1)
            best_lp = logprobs.gather(1, best[:, None])[:, 0]
            keep_rows = []
            for row, b in enumerate(active):
                tok = int(best[row])
                sum_lp[b] += float(best_lp[row])
                if tok == sp.eot:
                    reasons[b] = "eot"
                    continue
                tokens[b].append(tok)
                if self.options.guards:
                    cut = repeated_tail(tokens[b], self.options)
                    if cut:
                        del tokens[b][len(tokens[b]) - cut :]
                        reasons[b] = "loop"
                        continue
                if len(tokens[b]) >= limits[b]:
                    reasons[b] = "length"
                    continue
                keep_rows.append(row)
            if not keep_rows:
                break
            if len(keep_rows) < len(active):
                idx = torch.tensor(keep_rows, device=device)
                cache = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in cache]
                cross_kv = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in cross_kv]
                cross_mask = cross_mask.index_select(0, idx) if cross_mask is not None else None
                best = best.index_select(0, idx)
                hook = hook.select(keep_rows) if hook is not None else None
                active = [active[r] for r in keep_rows]
            logits, cache = self.decoder(best[:, None], cross_kv, cross_mask, cache, hook=hook)
            step_logits = logits[:, -1]
            step += 1
        return [(tokens[b], sum_lp[b], no_speech[b], reasons[b] or "length") for b in range(b_total)]

    def _beam(
        self,
        encoder_out: torch.Tensor,
        frames: torch.Tensor | None,
        limits: list[int],
        hook: DecoderHook | None = None,
    ) -> list[tuple[list[int], float, float, StopReason]]:
        """Beam search for every sample of the batch at once: the live hypotheses of all samples are the rows of
        one decoder step. A hypothesis finishes at end-of-text, at its sample's token limit, or (guards) when its
        tail loops (then its repeated copies are cut)."""
        beam = self.options.beam_size
        sp = self.tokenizer.special
        b_total = encoder_out.shape[0]
        device = encoder_out.device
        cross_kv_all, cross_mask_all, cache, no_speech, step_logits = self._prompt_step(encoder_out, frames, hook)

        # One row per live hypothesis: (sample, tokens, sum of log-probabilities); rows stay grouped by sample.
        live: list[tuple[int, list[int], float]] = [(b, [], 0.0) for b in range(b_total)]
        finished: list[list[tuple[list[int], float, StopReason]]] = [[] for _ in range(b_total)]
        samples_of_rows = list(range(b_total))
        cross_kv, cross_mask, row_hook = cross_kv_all, cross_mask_all, hook
        step = 0
        while live:
            scores = self._scores(step_logits, step)
            top_lp, top_tok = torch.log_softmax(scores, dim=-1).topk(beam + 1, dim=-1)
            top_lp, top_tok = top_lp.tolist(), top_tok.tolist()
            candidates: dict[int, list[tuple[float, int, int]]] = {}
            for row, (b, _, sum_lp) in enumerate(live):
                candidates.setdefault(b, []).extend(
                    (sum_lp + lp, row, tok) for lp, tok in zip(top_lp[row], top_tok[row])
                )
            next_live: list[tuple[int, list[int], float]] = []
            parents: list[int] = []
            for b, cands in candidates.items():
                cands.sort(key=lambda c: -c[0])
                kept: list[tuple[int, list[int], float]] = []
                for sum_lp, row, tok in cands:
                    tokens = live[row][1]
                    if tok == sp.eot:
                        finished[b].append((tokens, sum_lp, "eot"))
                    else:
                        tokens = tokens + [tok]
                        cut = repeated_tail(tokens, self.options) if self.options.guards else 0
                        if cut:
                            finished[b].append((tokens[: len(tokens) - cut], sum_lp, "loop"))
                        elif len(tokens) >= limits[b]:
                            finished[b].append((tokens, sum_lp, "length"))
                        else:
                            kept.append((b, tokens, sum_lp))
                            parents.append(row)
                    if len(kept) == beam or len(finished[b]) >= beam:
                        break
                if len(finished[b]) >= beam:  # the sample is done: its live rows leave the batch
                    del parents[len(parents) - len(kept) :]
                    kept = []
                next_live.extend(kept)
            if not next_live:
                break
            idx = torch.tensor(parents, device=device)
            cache = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in cache]
            samples = [b for b, _, _ in next_live]
            if samples != samples_of_rows:  # cross-attention inputs follow the rows' samples, not their parents
                sample_idx = torch.tensor(samples, device=device)
                cross_kv = [(k.index_select(0, sample_idx), v.index_select(0, sample_idx)) for k, v in cross_kv_all]
                cross_mask = cross_mask_all.index_select(0, sample_idx) if cross_mask_all is not None else None
                row_hook = hook.select(samples) if hook is not None else None
                samples_of_rows = samples
            live = next_live
            last = torch.tensor([[tokens[-1]] for _, tokens, _ in live], device=device)
            logits, cache = self.decoder(last, cross_kv, cross_mask, cache, hook=row_hook)
            step_logits = logits[:, -1]
            step += 1
        results = []
        for b in range(b_total):
            # the best log-probability per token, end-of-text counted (openai-whisper's ranking, no length penalty)
            tokens, sum_lp, reason = max(finished[b], key=lambda f: f[1] / (len(f[0]) + 1))
            results.append((tokens, sum_lp, no_speech[b], reason))
        return results


def _banned_ngram_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already present in ``tokens``."""
    if len(tokens) < n - 1 or n < 1:
        return []
    prefix = tuple(tokens[len(tokens) - (n - 1) :]) if n > 1 else ()
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]
