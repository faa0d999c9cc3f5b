"""Data layer: numpy/pandas only, outside jit. events -> intervals -> windows -> packed chunks."""
