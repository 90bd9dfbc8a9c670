"""Companion code for the book on adversarial robustness of VAEs and diffusion
denoising.

Importing this package has no side effects: it seeds nothing, downloads nothing and
imports JAX only when the NumPyro backend is asked for. Import the modules you need::

    from companion import data, profiles
    from companion.models import vae
"""

__version__ = "0.1.0"
