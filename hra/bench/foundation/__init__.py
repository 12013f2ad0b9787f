"""Foundation benchmark: do per-speaker HRA heads fix voices the frozen Whisper tiny.en fails, and at what cost?

    python -m hra.bench.foundation [--voices new_speaker] [--sizes 20,50,100] [--quick] [--corpus corpus]
                                   [--real-speech benchmarks/data/real_speech]
    make bench-foundation

For every new-speaker voice (never used to train the controller) and enrollment size (the first N train
utterances of the voice; held-out: its first ``--eval`` eval utterances, 40 by default), each system is trained
once (seed 0) and scored on the held-out utterances:

- ``base``: the base model exactly as the product serves it (``hra.inference.transcribe`` with no head: the
  foundation's base serving context, Whisper's 30-s window, and guarded decoding); every trained system trains
  and runs in the foundation's head context (``foundation.backbone``), as the product serves heads;
- ``linear_zero`` / ``linear_prior`` / ``ffn_zero`` / ``ffn_prior``: HRA heads from ``train_head`` (what the
  train worker runs), started at zero or at the population prior shipped with the controller;
- ``houlsby`` / ``lora`` / ``full_ft``: the baselines of ``hra.baselines`` (bottleneck adapters after every
  encoder block, LoRA on the encoder's attention and FFN projections, the whole encoder fine-tuned), trained by
  the same loop with the same enrollment data, held-out slice, schedule and budget as the heads (60 reference
  seconds: wall-clock seconds scaled by this machine's measured speed against the reference machine's,
  ``hra.bench.speed``, so that runs on different machines compare);
- ``hra_u0``: a linear head on a controller without recurrence: trained by the shipped controller's own command
  with u = 0 fixed (in ``<work-dir>/controller_u0``, trained there when missing, ~25 min; with ``--quick`` only
  if already there or ``--train-variant-controllers yes``), else the trained controller with u set to 0;
  ``hra_random``: a linear head on an untrained, random controller;
- ``hra_decoder``: a linear head on a controller that also runs across the decoder layers, trained by the
  shipped command with ``include_decoder`` (in ``<work-dir>/controller_decoder``, like u = 0; skipped when
  there is none).

The product serves a head only if its promotion gate (``hra.gate``, the shipped thresholds) finds it
better than the base on the speaker's evaluation speech; here the gate decides on the ``--gate`` eval utterances
after the held-out ones (20 by default), so "served" numbers (a rejected head leaves the speaker on the base) are
measured on speech the gate never saw.

WER is ``hra.text``'s (Whisper's English normalizer, jiwer): every error counts, loops included (``wer_capped``
caps each utterance's errors at its reference words, for reading, not for the targets). A voice "fails" when the
served base's capped WER exceeds 0.5. Voices the base handles: the ``standard`` group (base WER, and linear/FFN
heads at 50 utterances, which must not make them worse). Real speech: the served base against faster-whisper
(beam 5, int8, the same wheel) on the recordings of real people in ``--real-speech`` (default
benchmarks/data/real_speech), in the same run.

The headline's "linear" and "FFN" heads are the heads as the product trains them (``HeadTrainingOptions``'s
default init: "auto" = the shipped population prior when it fits the foundation, else zero); both inits are
reported. The controller ablations compare zero-started linear heads (``linear_zero`` vs ``hra_u0``/``hra_random``).

``--quick`` runs four new-speaker voices (failing in the corpus survey) at 50 utterances with every system, and
the product's linear head at 20 and 100. Every finished (voice, size, system) is appended to
``<work-dir>/results.jsonl`` under a key that covers what it depends on (backbone, controller, training recipe,
system configuration), so an interrupted run resumes where it stopped, and a larger run reuses a smaller one's
measurements. Output: a table,
``benchmarks/results/foundation.json`` (``foundation_quick.json`` with ``--quick``), and, as the last line, one
JSON object with the headline numbers (fractions; seconds).
"""

# The package, by role (each module's docstring says more):
#   options   the systems compared and what one run covers (BenchOptions)
#   data      the corpus voices' utterances and the real-speech recordings
#   scoring   WER, the product's promotion gate, relative reductions
#   store     the resumable, mergeable results store (results.jsonl)
#   variants  the foundations the systems run on (trained, random and variant controllers)
#   measure   the measurements (Bench), each kept in the store
#   runner    one run: corpus, foundations, measurements, report
#   summary   the report: per system, per voice, headline, targets, setup
#   tables    the report as a table
#   cli       the command line (``__main__`` runs it)
