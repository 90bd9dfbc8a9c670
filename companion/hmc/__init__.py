"""Hamiltonian Monte Carlo backends: ``companion.hmc.torch`` (PyTorch, batched chains)
and ``companion.hmc.numpyro`` (NumPyro's kernel on JAX ports of the models,
``companion.hmc.jax_models``).

The NumPyro backend imports JAX and is only loaded when asked for
(``from companion.hmc import numpyro``), so that importing ``companion`` or
``companion.hmc`` never imports JAX.
"""
