"""conceal: remove sensitive information from face images, and measure what still leaks."""

__version__ = "0.1.0"
