"""Layer 4: the video ViT, checkpoints (safe loading) and interop with official and Hugging Face weights."""
