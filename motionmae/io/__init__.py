"""Layer 3: files: video decoding and encoding (PyAV), sample videos, the motion cache and `prepare`."""
