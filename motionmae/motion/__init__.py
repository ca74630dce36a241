"""Layer 2: motion as arrays in, arrays out: optical flow, shot cuts, trajectories, HOG, targets, masks."""
