"""Layer 4: training data: datasets, sampling and joint augmentation, the synthetic data set, tar shards."""
