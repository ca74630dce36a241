"""Layer 0: helpers every other layer uses (list files, per-sample RNGs, video tallies, atomic writes)."""
