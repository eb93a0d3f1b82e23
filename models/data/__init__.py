"""Streaming loaders and transforms for CTR data (Criteo, Avazu, KDD12, synthetic)."""
