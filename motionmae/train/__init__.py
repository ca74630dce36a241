"""Layer 5: training: one engine (distributed setup, resume, checkpoints, logging) that pretraining and
fine-tuning use, the linear probe, and their optimizer parts."""
