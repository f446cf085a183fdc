"""`asciiray train-renderer`: train the neural font renderer that the VAE's image loss can use."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  asciiray train-renderer                          # default preset (64x64 grids, 4 px per cell), embedded corpus
  asciiray train-renderer --font-res 8 -n 20 -b 64 --num-workers 4 --use-gpu
  asciiray train-renderer --storage-path s3://bucket/runs --run-name font8
  asciiray train --renderer neural:s3://bucket/runs/font8 --font-res 8
"""


def register(sub: argparse._SubParsersAction) -> None:
    from asciiray.cli.train import add_training_parser
    from asciiray.train.options import RendererTrainConfig

    add_training_parser(sub, "train-renderer", RendererTrainConfig, run_train_renderer, EXAMPLES,
                        help="train the neural font renderer with Ray Train",
                        description="Train a network that draws character distributions the way the discrete "
                                    "font renderer draws their argmax, from corpus grids and random grids "
                                    "perturbed like a decoder's output. Same runtime as `asciiray train` (DDP, "
                                    "precision, checkpoints in a local directory or S3, --resume). Use the "
                                    "result with `asciiray train --renderer neural:CHECKPOINT` and the same "
                                    "--font-res.")


def run_train_renderer(args: argparse.Namespace) -> int:
    from asciiray.cli.train import fit
    from asciiray import checkpoint
    from asciiray.train.checkpoint import uri_of
    from asciiray.train.options import RendererTrainConfig
    from asciiray.train.renderer import train_renderer

    result = fit(train_renderer, RendererTrainConfig, args)
    if result is None:
        return 1
    m = result.metrics
    print(f"\ndone: {m['epoch']} epochs, val loss {m['val/loss']:.5f}; held-out PSNR: one-hot "
          f"{m['val/psnr_onehot']:.1f} dB, soft {m['val/psnr_soft']:.1f} dB, random {m['val/psnr_random']:.1f} dB")
    if result.checkpoint:
        uri = uri_of(result.checkpoint)
        with checkpoint.opened(uri) as d:
            model = checkpoint.load_meta(d)["model"]
        zoom = f" --font-zoom {model['font_zoom']}" if model["font_zoom"] != 1.0 else ""
        print(f"latest checkpoint: {uri}")
        print(f"use it: asciiray train --renderer neural:{uri} --font-res {model['font_res']}{zoom}")
    return 0
