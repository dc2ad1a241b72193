"""CLIS: score layout-conditioned synthetic images and keep the best candidates."""

__version__ = "0.1.0"
