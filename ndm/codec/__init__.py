"""Lossless compression with a trained model: bits-back coding with ANS (docs/compression.md)."""

from ndm.codec.ans import CodecError
from ndm.codec.codec import CodecSettings, compress_to_file, decode, decompress_file, encode

__all__ = ["CodecError", "CodecSettings", "compress_to_file", "decode", "decompress_file", "encode"]
