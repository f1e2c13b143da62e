"""kan_core: interpretable Kolmogorov–Arnold Networks (PyTorch, sympy, compiled CPU kernels)
and formula discovery (`kan_core.discover`)."""
