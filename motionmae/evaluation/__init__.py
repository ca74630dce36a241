"""Layer 6: what a trained model does: the multi-view test, and the figure of what a pretrained model predicts."""
