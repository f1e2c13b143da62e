"""kan_core: interpretable Kolmogorov–Arnold Networks in pure PyTorch."""
