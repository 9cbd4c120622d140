"""ndm: Neural Diffusion Models and their special cases (DDPM, VDM, ...).

Forward marginals q(z_t | x) = N(alpha_t F_phi(x, t), sigma_t^2 I); see docs/math.md, Notation.
"""

__version__ = "0.1.0"
