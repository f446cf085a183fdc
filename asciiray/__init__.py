"""asciiray: variational autoencoders of ASCII art, trained on Ray."""

__version__ = "0.1.0"
