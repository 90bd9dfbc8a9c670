"""Hamiltonian Monte Carlo backends: ``companion.hmc.torch`` (PyTorch, batched chains).

The NumPyro backend (``companion.hmc.numpyro``) imports JAX and is only loaded when asked
for, so that importing ``companion`` never imports JAX.
"""
