"""Triton side: config.pbtxt generation, the versioned model repository, the local server."""
