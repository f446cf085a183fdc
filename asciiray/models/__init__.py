"""Models of character grids: the VAE, the neural font renderer, and their presets."""

from asciiray.models.encoding import one_hot
from asciiray.models.renderer import (RENDERER_PRESETS, NeuralRenderer, RendererConfig, get_renderer_preset,
                                      make_renderer)
from asciiray.models.vae import PRESETS, VAE, VAEConfig, count_parameters, describe, get_preset

__all__ = ["PRESETS", "RENDERER_PRESETS", "VAE", "NeuralRenderer", "RendererConfig", "VAEConfig",
           "count_parameters", "describe", "get_preset", "get_renderer_preset", "make_renderer", "one_hot"]
