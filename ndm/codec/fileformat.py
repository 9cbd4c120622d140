"""The compressed file: a checked header and the ANS payload (docs/compression.md "File format").

    magic "NDMBB\\x1a" | u16 format version | u32 header length | header (zlib JSON) | u32 CRC32 of
    the header | payload (little-endian u32 words)

The header holds the coding settings and their hash, the SHA-256 of the model's state_dict,
the counts (examples, event shape, levels, batch sizes), the initial-bits seed and size, the
SHA-256 of the payload and of the coded data. Reading checks all of them, so a corrupt or
truncated file, or a model other than the one that wrote it, is an error, never a wrong decode.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from ndm.codec.ans import CodecError

MAGIC = b"NDMBB\x1a"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<6sHI")


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the state_dict: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def data_digest(levels: torch.Tensor) -> str:
    return hashlib.sha256(levels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()).hexdigest()


def payload_bytes(words: np.ndarray) -> bytes:
    w = np.asarray(words, dtype=np.uint32)
    return (w.byteswap() if sys.byteorder == "big" else w).tobytes()


def write_file(path: str | Path, header: dict, words: np.ndarray) -> int:
    """Write the file; returns its size in bytes."""
    payload = payload_bytes(words)
    header = {**header, "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_words": int(len(words))}
    head = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    blob = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + struct.pack("<I", zlib.crc32(head)) + payload
    Path(path).write_bytes(blob)
    return len(blob)


def read_file(path: str | Path) -> tuple[dict, np.ndarray]:
    """(header, payload words), after checking magic, version, header CRC, length and payload hash."""
    blob = Path(path).read_bytes()
    if len(blob) < _PREFIX.size or blob[:6] != MAGIC:
        raise CodecError(f"{path}: not an ndm bits-back file (bad magic); write it with `ndm compress`")
    _, version, head_len = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise CodecError(f"{path}: format version {version}, this ndm reads version {FORMAT_VERSION}")
    end = _PREFIX.size + head_len
    if len(blob) < end + 4:
        raise CodecError(f"{path}: truncated inside the header ({len(blob)} bytes)")
    head = blob[_PREFIX.size : end]
    (crc,) = struct.unpack_from("<I", blob, end)
    if zlib.crc32(head) != crc:
        raise CodecError(f"{path}: header checksum mismatch (the file is corrupt)")
    header = json.loads(zlib.decompress(head))
    payload = blob[end + 4 :]
    if len(payload) != 4 * header["payload_words"]:
        raise CodecError(f"{path}: payload has {len(payload)} bytes, the header says {4 * header['payload_words']} (truncated or padded)")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise CodecError(f"{path}: payload checksum mismatch (the file is corrupt)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    return header, words
