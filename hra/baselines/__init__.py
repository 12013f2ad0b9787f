"""Per-speaker adaptation baselines (Houlsby bottleneck adapters, LoRA, full encoder fine-tuning) that the
foundation benchmark compares with HRA heads, under the same data and time budget.

Modules: ``adapters`` (the modules: identity at start, the shared backbone never changed), ``training``
(``train_adapter`` on the shared set-up and loop ``hra.training.loop.SpeakerTraining``, ``transcribe_adapted``).
"""

from hra.baselines.adapters import (
    ADAPTER_KINDS, WHISPER_ENCODER, AdapterConfig, BottleneckAdapters, EncoderAdapter, EncoderSpec, FineTunedEncoder,
    LoRAEncoder, LoRALinear, make_adapter, private_encoder_copy,
)
from hra.baselines.training import (
    DEFAULT_LEARNING_RATES, AdapterTrainingResult, adapter_loss, train_adapter, transcribe_adapted,
)

__all__ = [
    "ADAPTER_KINDS", "DEFAULT_LEARNING_RATES", "WHISPER_ENCODER", "AdapterConfig", "AdapterTrainingResult",
    "BottleneckAdapters", "EncoderAdapter", "EncoderSpec", "FineTunedEncoder", "LoRAEncoder", "LoRALinear",
    "adapter_loss", "make_adapter", "private_encoder_copy", "train_adapter", "transcribe_adapted",
]
