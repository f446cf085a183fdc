"""`python -m asciiray.models`: one line per preset (grid, latent size, parameter count)."""

from asciiray.models.vae import PRESETS, describe

for name in PRESETS:
    print(describe(name))
