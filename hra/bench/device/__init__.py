"""Device benchmark: head training and batched mixed-head serving on CUDA (or CPU).

    python -m hra.bench.device --device cuda --out benchmarks/results/device_h100.json [--no-cudnn-sdp]
    python -m hra.bench.device --device cpu --tiny --n-train 8 --n-eval 3 --max-epochs 1 --serve-batch 3 \
        --heads linear --precisions float32 --out /tmp/device_smoke.json                # smoke test, ~30 s
    python benchmarks/service_training.py --into benchmarks/results/device_h100.json   # then the service's path

What an operator of a fleet of GPU workers wants to know before sending jobs to one:

1. **Training** (``hra.training.head.train_head``, what the train worker runs): linear and FFN heads with
   precision "auto" and "float32" ("auto" was bfloat16 autocast on CUDA when benchmarks/results/device_h100.json
   was measured; that measurement made it float32 there), on the first ``--n-train`` train utterances of
   ``--voice`` (sorted by id, as ``hra.bench.foundation.data.load_voice`` gives them); each head then transcribes
   the voice's first ``--n-eval`` eval utterances (``hra.inference.transcribe``) and is scored with
   ``hra.bench.foundation.scoring.score`` (WER after the shared text normalizer). The served base model is scored
   too.
   Train seconds (``train_head``'s own clock: data preparation included), its preparation share, epochs, steps,
   why it stopped, peak GPU memory. Each configuration runs in a fresh process, as a freshly started worker
   (foundation loaded, CUDA context made), one after another, so that no configuration inherits another's
   warmed-up kernels. On CUDA the same process then runs the worker's next jobs: a new speaker
   (``--new-speaker-voice``; other utterance lengths, so other batch shapes) and the first voice again (every
   shape seen): on CUDA a batch shape seen for the first time costs far more than a repeated one (kernel
   selection and loading per shape), and a worker sees new shapes with every speaker.
2. **Serving**: a batch of ``--serve-batch`` utterances, each with one of 7 heads (4 linear, 3 FFN: the shipped
   population priors and seeded perturbations of them, built on the CPU so that every device gets the same
   heads) or none, in one ``transcribe`` call (``HeadApplier``'s grouped path), against one call per utterance.
   Equivalence: encoder outputs (valid frames) of the mixed batch vs each sample alone, and the transcripts.
   Throughput: utterances/s (and audio seconds/s) mixed-batched, one-at-a-time, and one-head-for-all batched; on
   CUDA also a batch-size sweep.
3. **Service** (not here: this package does not drive the service): ``benchmarks/service_training.py`` measures
   ``app.hra_ml.HRAMLService``'s path (foundation from the settings, ``decode_audio``, ``train``, ``transcribe`` with
   and without the artifact, a warm-started second version) and, with ``--into OUT``, adds it to this command's
   record as ``service`` (with its errors): the record both used to write in one run, now in two commands.
   ``--sections service`` is refused with that command.

CPU baseline (``--cpu-baseline parallel``, the default with ``--device cuda``): the same training runs
(precision "auto", which is float32 on a CPU without native bfloat16, plus "float32" when "auto" differs) and the
serving measurements run on the same machine's CPU, one torch thread each, as child processes that run while the
GPU part runs (``sequential``: one after another, before it). Their results join this run's: ``cpu`` rows.
The serving child also keeps its mixed-batch transcripts and encoder outputs, which are compared with the GPU's
(cross-device agreement).

``--no-cudnn-sdp`` turns PyTorch's cuDNN attention backend off (in every process of the run): measured on an H100,
it builds a plan for every new attention shape in bfloat16 (~20 ms of CPU per call), which made precision "auto"
(bfloat16) head training 5x slower than float32 for every new speaker on a warm worker.

Every section is guarded: an exception is recorded (``errors``: section and traceback) and the run goes on.
Output: a table, ``--out`` (the whole record) and, as the last line, one JSON object with the headline numbers
(seconds, WER as fractions). Exit status 1 when a section failed.
"""

# The package, by role (each module's docstring says more):
#   common    timing, peak memory, environment, guarded sections, process settings, data, transcript comparison
#   training  1. head training as the train worker runs it, and a worker's later jobs
#   serving   2. mixed-head batches against one at a time; cross-device agreement
#   children  fresh processes: each training configuration, the CPU baseline
#   report    tables and the headline (last output line)
#   cli       the command line and the run (``__main__`` runs it)
