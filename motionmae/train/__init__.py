"""Layer 5: training: pretraining, fine-tuning and the linear probe, with their distributed and optimizer parts."""
