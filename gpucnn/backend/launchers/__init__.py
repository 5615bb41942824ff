"""The CUDA backend's kernel launchers: ``launchers/<family>.py`` beside ``kernels_cuda/<family>.cu``,
and ``launching.py``, what they share."""
