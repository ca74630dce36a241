"""Layer 1: figures as RGB images: image building blocks, charts, and overlays on frames."""
