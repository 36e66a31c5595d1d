"""Headless core of the neural scene viewer: cameras, rendering, fields, backends, data, training.

This package only depends on torch/numpy/safetensors/imageio; it never imports Qt, OpenGL or
``viewer`` (``tests/test_imports.py`` enforces it).
"""

__version__ = "0.1.0"
