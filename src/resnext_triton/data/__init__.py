"""Data shipped with the package: the ImageNet label list."""
