"""Hierarchical Recurrent Adapters: the shared controller, per-speaker heads, the encoder hook, artifacts.

    x_0 = f(audio);  h_0 = 0
    for l in 1..N:
        h_l = ReLU(W x_{l-1} + u * h_{l-1} + b)      # Controller (shared, frozen once trained)
        o_l = head_s(h_l)                            # Head (one per speaker, shared by all layers)
        x_l = L_l(x_{l-1}) + o_l                     # HRAHook, called by the backbone after each block
"""

from hra.adapter.controller import Controller, ControllerConfig
from hra.adapter.heads import FFNHead, Head, HeadConfig, LinearHead, make_head
from hra.adapter.hook import HRAHook, HeadApplier

__all__ = [
    "Controller",
    "ControllerConfig",
    "FFNHead",
    "HRAHook",
    "Head",
    "HeadApplier",
    "HeadConfig",
    "LinearHead",
    "make_head",
]
