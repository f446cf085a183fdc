"""Training options as data: those every training command shares, the VAE's and the neural renderer's.

Kept free of torch and ray imports so the CLI can build its parsers at once.

Each field is at once a config-file key and a CLI flag (see asciiray.config).
"""

from __future__ import annotations

from dataclasses import dataclass

from asciiray.config import option

# Keys that may change when a run is resumed: they say where and how it runs, not what it learns.
RUNTIME_KEYS = frozenset({"num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker", "threads", "max_failures",
                          "address", "resume", "storage_path", "run_name", "print_every"})


@dataclass
class RunOptions:
    """What every training command shares: the data, the optimisation, the storage and the runtime."""

    corpus: str = option("", "corpus directory or s3:// prefix (default: the embedded FIGlet corpus)")
    validation_prop: float = option(0.1, "share of pieces held out for validation (stable per piece id)")
    max_pieces: int = option(-1, "use only N pieces that fit the grid, a sample stable by id (0: all; -1: all of "
                                 "a given --corpus, 3000 of the embedded one)")
    n_epochs: int = option(4, "epochs to train", flags=("-n",))
    batch_size: int = option(64, "pieces per batch on each worker", flags=("-b",))
    learning_rate: float = option(1e-3, "Adam learning rate")
    grad_clip: float = option(1.0, "clip the gradient norm to this value (0: no clipping)")
    precision: str = option("auto", "auto: bf16 on a GPU that supports it, fp32 on CPU; 16 uses a grad scaler",
                            choices=("auto", "32", "bf16", "16"))
    seed: int = option(0, "random seed (each worker adds its rank)")
    storage_path: str = option("./runs", "where runs live: a local directory or s3://bucket/prefix")
    run_name: str = option("", "name of the run under the storage path (default: <kind>-<date>-<time>)")
    resume: bool = option(False, "continue the run named by --run-name from its latest checkpoint")
    checkpoint_every: int = option(1, "save a checkpoint every N epochs (and always at the end)")
    keep_checkpoints: int = option(3, "keep the best K checkpoints (VAE: by val/ink_f1, renderer: by val/loss; "
                                      "the latest is always kept)")
    print_every: int = option(1, "log a sample input|output every N epochs")
    num_workers: int = option(1, "Ray Train workers (DDP processes)")
    use_gpu: bool | None = option(None, "one GPU per worker (default: when CUDA is present)")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker (fractions allowed)")
    gpus_per_worker: float = option(1.0, "GPUs reserved per worker when on GPU (a fraction shares a GPU)")
    threads: int = option(0, "torch threads per worker (0: the node's cores divided among its workers)")
    max_failures: int = option(0, "restart the workers from the latest checkpoint up to N times after a failure")
    max_nonfinite_steps: int = option(20, "stop the run after this many consecutive non-finite steps")
    address: str = option("", "Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")


@dataclass
class TrainConfig(RunOptions):
    preset: str = option("small", "model preset: seed (the prototype's shapes), small (CPU), tiny (tests)")
    kl_coeff: float = option(5e-4, "weight of the KL term, which is summed over z (the prototype averaged over "
                                   "z: its --kl-coeff 0.05 with z = 512 is 0.05 / 512, about 1e-4, here)")
    ce_recon_loss_scale: float = option(1.0, "weight of the cross-entropy reconstruction term")
    image_recon_loss_coeff: float = option(0.5, "weight of the rendered-image term (--image-loss; 0 turns it off)")
    gumbel_tau_r: float = option(0.1, "Gumbel-softmax temperature decay: tau = max(0.5, exp(-r * epoch))")
    space_deemph: float = option(1.0, "divide the class weight of the space character by this")
    char_weights_scaling: float = option(0.0, "class weights (1/(count+1))^s from the training pieces' raw "
                                              "character counts: 1 is inverse frequency (the prototype's notes "
                                              "used 0.7), 0 equal weights")
    ce_label_smoothing: float = option(0.0, "label smoothing of the cross entropy")
    roll_std: float = option(1.0, "std (cells) of the random roll augmentation (0: off)")
    renderer: str = option("continuous", "renderer of the image loss (differentiable): continuous, or "
                                         "neural:CHECKPOINT")
    font_res: int = option(4, "pixels per character cell in rendered images")
    font_zoom: float = option(1.0, "font size relative to the cell")
    # issue 14
    image_loss: str = option("mse", "how the image term compares renders: mse, l1 or ssim (1 - SSIM)",
                             choices=("mse", "l1", "ssim"))


@dataclass
class RendererTrainConfig(RunOptions):
    learning_rate: float = option(3e-3, "Adam learning rate")
    preset: str = option("default", "renderer preset: default (64x64 grids), tiny (tests)")
    font_res: int = option(0, "pixels per character cell; match the VAE's --font-res (0: the preset's)")
    font_zoom: float = option(0.0, "font size relative to the cell; match the VAE's (0: the preset's)")
    channels: int = option(0, "feature channels per cell (0: the preset's)")
    depth: int = option(-1, "residual 3x3 conv blocks (-1: the preset's)")
    target: str = option("discrete", "what to imitate: discrete (glyph of the argmax) or continuous "
                                     "(probability-weighted glyphs)", choices=("discrete", "continuous"))
    crop: int = option(0, "train on random crop x crop windows of the grids (0: whole grids): cheaper steps "
                          "for the same per-cell task; validation always draws whole grids")
    random_prop: float = option(0.5, "share of each training batch made of random grids instead of corpus grids")
    onehot_prop: float = option(0.25, "share of training cells left one-hot; the rest are perturbed")
    temperature_min: float = option(0.1, "lowest softmax temperature of the noisy-logit cells")
    temperature_max: float = option(3.0, "highest softmax temperature of the noisy-logit cells")
