"""Moved to fito.format.hashing (bytes only, no torch); kept so existing imports keep working."""
from fito.format.hashing import ALGORITHMS, DEFAULT_ALGORITHM, StreamingHash, digest, new_hash

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "StreamingHash", "digest", "new_hash"]
