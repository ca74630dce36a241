"""motionmae: self-supervised video representation learning with motion."""

__version__ = "0.1.0"
