"""Bytes only (no torch, no I/O): how objects, blocks and manifests of sharded checkpoints are laid out."""
