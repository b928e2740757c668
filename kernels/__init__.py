"""Triton kernels for the sparse and EM attention mechanisms (imported as ``ablate_kernels``)."""
