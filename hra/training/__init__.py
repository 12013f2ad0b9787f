"""Training: per-speaker heads (what the train worker calls) and the shared controller (run once, offline)."""
