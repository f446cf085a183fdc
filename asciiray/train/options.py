"""The run configs of the training commands, as typed sections (see asciiray.config).

`TrainConfig` (the VAE) and `RendererTrainConfig` (the neural renderer) share
the data, optim, checkpoint, log and resources sections and differ in their
model and loss/task sections. Each section checks its own values when built,
so a config that exists is valid; `None` means "the preset's" or "the
corpus's" default, never a magic number. Kept free of torch and ray imports so
the CLI can build its parsers at once. The same dataclass travels from the
flags to every Ray Train worker and Tune trial.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from asciiray.config import Section, option, section
from asciiray.errors import UserError

VAE_PRESETS = Literal["seed", "small", "small-map", "tiny"]
RENDERER_PRESETS = Literal["default", "tiny"]

# `asciiray train`'s budget when none is given, the same for a corpus of any size: about 3 minutes of the default
# run on a 2-core CPU (3,000 embedded pieces, 2,716 of them for training, in batches of 64: 16 epochs).
DEFAULT_MAX_STEPS = 700
# The options that say how long a run trains; --resume may change them (asciiray.train.budget).
BUDGET_PATHS = frozenset({"optim.n_epochs", "optim.max_steps", "optim.time_budget"})


def _at_least(values: dict[str, float], minimum: float) -> None:
    for name, value in values.items():
        if value < minimum:
            raise UserError(f"--{name.replace('_', '-')} {value} must be at least {minimum:g}")


@dataclass
class DataSection(Section):
    """Which pieces, split how, in which batches."""

    corpus: str | None = option(None, "corpus directory or s3:// prefix, or a folder of .txt files "
                                      "(default: the embedded FIGlet corpus)")
    validation_prop: float = option(0.1, "share of pieces held out for validation (stable per piece id)")
    max_pieces: int | None = option(None, "use only N pieces that fit the grid, a sample stable by id (0: all; "
                                          "default: all of a given --corpus, 3000 of the embedded one)")
    batch_size: int = option(64, "pieces per batch on each worker", flags=("-b",))

    def check(self) -> None:
        _at_least({"batch_size": self.batch_size}, 1)
        if self.max_pieces is not None and self.max_pieces < 0:
            raise UserError(f"--max-pieces {self.max_pieces}: use a count, or 0 for all pieces")
        if not 0 < self.validation_prop < 1:
            raise UserError(f"--validation-prop {self.validation_prop} must be between 0 and 1")


@dataclass
class OptimSection(Section):
    """How long and how the weights move."""

    n_epochs: int | None = option(None, f"epochs to train (default: none). A run ends at the first of -n, "
                                        f"--max-steps and --time-budget it reaches (given none of them, `train` trains "
                                        f"{DEFAULT_MAX_STEPS} steps and `train-renderer` 4 epochs); --resume "
                                        f"keeps the run's budget, but any of the three given with it replaces "
                                        f"that part",
                                  flags=("-n",))
    max_steps: int | None = option(None, "end the run after this many optimizer steps, counted across resumes "
                                         "(the epoch it ends in is cut short, then validated and checkpointed)")
    time_budget: float | None = option(None, "end the run after this many minutes of training, counted across "
                                             "resumes; the learning-rate schedule then spans the steps the minutes "
                                             "are estimated to hold (within -n and --max-steps), re-estimated from "
                                             "the measured step rate as the run goes")
    learning_rate: float | Literal["auto"] = option(
        3e-3, "Adam learning rate (the peak of --lr-schedule cosine), or auto: run `asciiray lr-find` on the run's "
              "training pieces first and use its suggestion (recorded in the run's stored config)")
    grad_clip: float = option(1.0, "clip the gradient norm to this value (0: no clipping)")
    precision: Literal["auto", "32", "bf16", "16"] = option(
        "auto", "auto: bf16 on a GPU that supports it, fp32 on CPU; 16 uses a grad scaler")
    seed: int = option(0, "random seed (each worker adds its rank)")
    max_nonfinite_steps: int = option(20, "stop the run after this many consecutive non-finite steps")
    # Stochastic weight averaging (asciiray.train.swa): flatter minima for the last epochs' weights.
    swa_start: int | None = option(None, "stochastic weight averaging: train this many epochs as usual, then anneal the "
                                         "learning rate to --swa-lr and average the weights at the end of every "
                                         "later epoch; checkpoints then hold the averaged weights (off by default)")
    swa_lr: float | None = option(None, "the learning rate of the SWA epochs (default: --learning-rate; the "
                                        "prototype's notes used 0.05)")
    # The rate of each step, from the step alone, so a resumed run continues the schedule exactly
    # (asciiray.train.schedule).
    lr_schedule: Literal["constant", "cosine"] = option(
        "cosine", "learning-rate schedule over the run's steps: constant, or cosine (linear warm-up over "
                    "--lr-warmup of the steps, then a cosine decay to 0 at the run's last step: the end of its "
                    "step or epoch budget, or the estimate of its --time-budget)")
    lr_warmup: float = option(0.05, "share of the run's steps the cosine schedule warms up over")

    def check(self) -> None:
        _at_least({"max_nonfinite_steps": self.max_nonfinite_steps}, 1)
        for name in ("n_epochs", "max_steps"):
            if getattr(self, name) is not None:
                _at_least({name: getattr(self, name)}, 1)
        if self.time_budget is not None and not self.time_budget > 0:
            raise UserError(f"--time-budget {self.time_budget:g} must be a positive number of minutes, e.g. 30")
        if self.learning_rate != "auto" and not self.learning_rate > 0:
            raise UserError(f"--learning-rate {self.learning_rate} must be positive, e.g. 1e-3, or auto")
        _at_least({"grad_clip": self.grad_clip}, 0)
        if self.swa_start is not None and self.n_epochs is None:
            raise UserError("--swa-start counts epochs: give -n/--n-epochs with it (SWA averages the weights at "
                            "epoch ends after the first --swa-start epochs)")
        if self.swa_start is not None and not 0 <= self.swa_start < self.n_epochs:
            raise UserError(f"--swa-start {self.swa_start} must be at least 0 and below --n-epochs "
                            f"{self.n_epochs}: SWA averages the epochs after the first --swa-start ones")
        if self.swa_lr is not None and not self.swa_lr > 0:
            raise UserError(f"--swa-lr {self.swa_lr} must be positive, e.g. 0.05")
        if not 0 <= self.lr_warmup < 1:
            raise UserError(f"--lr-warmup {self.lr_warmup} must be a share of the steps in [0, 1)")


@dataclass
class CheckpointSection(Section):
    """Where the run lives and which checkpoints it keeps."""

    storage_path: str = option("./runs", "where runs live: a local directory or s3://bucket/prefix")
    run_name: str | None = option(None, "name of the run under the storage path (default: <kind>-<date>-<time>)")
    resume: bool = option(False, "continue the run named by --run-name from its latest checkpoint")
    checkpoint_every: int = option(1, "save a checkpoint every N epochs (and always at the end)")
    keep_checkpoints: int = option(3, "keep the best K checkpoints (VAE: by val/ink_f1, renderer: by val/loss; "
                                      "the latest is always kept)")
    # A time cadence for checkpoints, for runs whose epochs last seconds (asciiray.train.cadence).
    checkpoint_every_minutes: float | None = option(
        None, "instead of every --checkpoint-every epochs, save a checkpoint at the first epoch end at least "
              "this many minutes after the last one (and always at the end) (default: off)")

    def check(self) -> None:
        _at_least({"checkpoint_every": self.checkpoint_every, "keep_checkpoints": self.keep_checkpoints}, 1)
        if self.checkpoint_every_minutes is not None:
            if not self.checkpoint_every_minutes > 0:
                raise UserError(f"--checkpoint-every-minutes {self.checkpoint_every_minutes} must be a positive "
                                f"number of minutes")
            if self.checkpoint_every != 1:
                raise UserError("--checkpoint-every and --checkpoint-every-minutes both say when to checkpoint: "
                                "give one of them")
        if self.run_name is not None and (not self.run_name or "/" in self.run_name or self.run_name in (".", "..")):
            raise UserError(f"--run-name {self.run_name!r} must be a plain directory name")


@dataclass
class LogSection(Section):
    """What the run shows while it trains."""

    print_every: int = option(1, "log a sample input|output every N epochs")
    progress_every_s: float = option(20.0, "inside an epoch, log steps done, samples/s and time left every this "
                                           "many seconds")
    # Step cadences of the rank-0 costs, for epochs too long to wait for (asciiray.train.cadence).
    val_every_steps: int | None = option(
        None, "validate every N training steps, inside epochs too (TensorBoard val_step/*, at the step); epoch "
              "ends then validate only where a checkpoint is written, and an epoch's metrics carry the latest "
              "validation (default: validate at every epoch end)")
    # Validating every N epochs saves the validation's cost on short epochs, as the prototype did.
    validation_every: int = option(1, "validate at every N-th epoch end (and the last); checkpoints follow "
                                      "validation: an epoch that does not validate writes no checkpoint, so every "
                                      "checkpoint is ranked by figures of its own weights; the epochs between "
                                      "carry the latest validation (val_epoch says which)")
    log_every_steps: int | None = option(
        None, "write TensorBoard scalars train_step/* (the metrics of the last N steps over all workers, the "
              "learning rate, a worker's samples/s) every N training steps (default: per epoch only)")

    def check(self) -> None:
        _at_least({"print_every": self.print_every, "validation_every": self.validation_every}, 1)
        if self.validation_every != 1 and self.val_every_steps is not None:
            raise UserError("--validation-every and --val-every-steps both say when to validate: give one of them")
        for name in ("val_every_steps", "log_every_steps"):
            if getattr(self, name) is not None:
                _at_least({name: getattr(self, name)}, 1)
        if not self.progress_every_s > 0:
            raise UserError(f"--progress-every-s {self.progress_every_s} must be a positive number of seconds")


@dataclass
class ResourcesSection(Section):
    """Where and on how much the run trains; may change when a run is resumed."""

    num_workers: str = option("1", "Ray Train workers (DDP processes): N, or MIN:MAX for an elastic run that starts "
                                   "once MIN fit, with as many as fit up to MAX, grows as resources appear and "
                                   "shrinks instead of failing when a node is lost (each loss uses one of "
                                   "--max-failures); an elastic run keeps its global batch, --batch-size x MAX, "
                                   "whatever its size")
    use_gpu: bool | None = option(None, "one GPU per worker (default: when CUDA is present)")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker (fractions allowed)")
    gpus_per_worker: float = option(1.0, "GPUs reserved per worker when on GPU (a fraction shares a GPU)")
    threads: int | None = option(None, "torch threads per worker (default: the node's cores divided among "
                                       "its workers)")
    max_failures: int = option(0, "restart the workers from the latest checkpoint up to N times after a failure")
    address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    # Ray Train's ScalingConfig(elastic_resize_monitor_interval_s): short in tests, long for long epochs, since
    # each growth restarts the workers.
    resize_check_every_s: float = option(60.0, "an elastic run looks this often for room for more workers (up to "
                                               "MAX); growing restarts the workers from the latest checkpoint, so "
                                               "the work since it is done again")
    # torch.compile, checked on the driver first (asciiray.train.compiled).
    compile: bool = option(False, "torch.compile the model and the loss (needs a C++ compiler on CPU, Triton on "
                                  "a GPU; the first steps compile, for minutes on a CPU); results differ from "
                                  "eager ones by rounding only")

    def workers(self) -> tuple[int, int]:
        """(min, max) workers; equal for a fixed-size run."""
        parts = str(self.num_workers).split(":")
        try:
            low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
        except ValueError:
            low = high = 0
        if not 1 <= low <= high:
            raise UserError(f"--num-workers {self.num_workers!r}: use a count such as 4, or MIN:MAX such as 2:8")
        return low, high

    @property
    def elastic(self) -> bool:
        low, high = self.workers()
        return low < high

    def check(self) -> None:
        self.workers()
        _at_least({"max_failures": self.max_failures, "resize_check_every_s": self.resize_check_every_s}, 0)
        if self.threads is not None:
            _at_least({"threads": self.threads}, 1)
        if not self.cpus_per_worker > 0 or not self.gpus_per_worker > 0:
            raise UserError("--cpus-per-worker and --gpus-per-worker must be positive (fractions allowed)")


@dataclass
class VAEModelSection(Section):
    """Which VAE (the sizes live in asciiray.models.PRESETS)."""

    preset: VAE_PRESETS = option("small-map", "model preset: small-map (a global z and a 16x16 latent map under a "
                                              "learned prior p(map | z): room to draw), small (z alone), seed (the "
                                              "prototype's shapes), tiny (tests)")
    # A new run from another run's weights (asciiray.train.vae.check_init_from), unlike --resume.
    init_from: str | None = option(None, "start a NEW run from the weights of this VAE checkpoint (a checkpoint or "
                                         "run directory, local or s3://) with this run's options: epoch 0, a fresh "
                                         "optimizer; the checkpoint must have this preset's shapes (--resume "
                                         "instead continues a run exactly)")
    # The decoder starts from the corpus's character distribution rather than uniform, so the first steps
    # are not spent learning how common spaces are.
    output_prior: bool = option(True, "start the decoder's output bias at the training grids' log character "
                                      "frequencies (off: the preset's init, as the prototype)")
    # A 96-channel head (asciiray.models.vae.VAEConfig.pad_head): GPU kernels favour multiples of 8 or 32.
    pad_head: bool = option(False, "give the decoder's last conv 96 output channels instead of 95 (a multiple "
                                   "of 8/32 for GPU kernels); the 96th logit is dropped before the softmax, so "
                                   "the probabilities, losses and metrics over the 95 characters are unchanged")
    # The prototype's weight init (asciiray.models.vae.VAEConfig.init_std), to reproduce its recipe.
    init_std: float | None = option(None, "draw the conv, linear and embedding weights from N(0, init_std^2) and "
                                          "zero their biases, as the prototype did (default: the preset's init, "
                                          "PyTorch's own)")

    def check(self) -> None:
        if self.init_std is not None and not self.init_std > 0:
            raise UserError(f"--init-std {self.init_std} must be a positive standard deviation, e.g. 0.02")


@dataclass
class LossSection(Section):
    """The VAE's objective: loss = kl_coeff * kl + ce_recon_loss_scale * ce + image_recon_loss_coeff * image
    (+ where_coeff * where)."""

    kl_coeff: float = option(5e-4, "weight of the KL term, which is summed over z (the prototype averaged over "
                                   "z: its --kl-coeff 0.05 with z = 512 is 0.05 / 512, about 1e-4, here)")
    kl_map_coeff: float = option(1e-5, "weight of the latent map's KL term, KL(q(map | x) || p(map | z)), summed "
                                       "over the map, for presets with a latent map: lower than --kl-coeff, since "
                                       "the map holds the strokes, thousands of numbers a piece")
    ce_recon_loss_scale: float = option(1.0, "weight of the cross-entropy reconstruction term")
    image_recon_loss_coeff: float = option(0.0, "weight of the rendered-image term (--image-loss; 0 turns it off: "
                                                  "on a CPU it makes a small-preset step about 2.5x slower)")
    gumbel_tau_r: float = option(0.1, "Gumbel-softmax temperature decay: tau = max(0.5, exp(-r * epoch))")
    space_deemph: float | Literal["balanced"] = option(
        5.0, "divide the class weight of the space character by this (higher: more ink), or balanced: by the "
             "training grids' space cells over their ink cells, so that space and ink weigh the same in total "
             "whatever the corpus's ink density")
    char_weights_scaling: float = option(0.0, "class weights (1/(count+1))^s from the training pieces' raw "
                                              "character counts: 1 is inverse frequency (the prototype's notes "
                                              "used 0.7), 0 equal weights")
    ce_label_smoothing: float = option(0.0, "label smoothing of the cross entropy")
    roll_std: float = option(1.0, "std (cells) of the random roll augmentation (0: off)")
    where_coeff: float = option(
        0.0, "weight of the where term: BCE of each cell's ink-or-space decision (best ink character against "
             "the space) against the input's ink mask; where a picture's strokes use many characters the space "
             "otherwise wins every cell and the piece comes back blank (0: off)")
    renderer: str = option("continuous", "renderer of the image loss (differentiable): continuous, or "
                                         "neural:CHECKPOINT")
    font_res: int = option(4, "pixels per character cell in rendered images")
    font_zoom: float = option(1.0, "font size relative to the cell")
    image_loss: Literal["mse", "l1", "ssim"] = option("mse", "how the image term compares renders: mse, l1 or "
                                                             "ssim (1 - SSIM)")

    def check(self) -> None:
        _at_least({"kl_coeff": self.kl_coeff, "ce_recon_loss_scale": self.ce_recon_loss_scale,
                   "image_recon_loss_coeff": self.image_recon_loss_coeff, "gumbel_tau_r": self.gumbel_tau_r,
                   "char_weights_scaling": self.char_weights_scaling, "roll_std": self.roll_std,
                   "where_coeff": self.where_coeff}, 0)
        _at_least({"font_res": self.font_res}, 1)
        if (self.space_deemph != "balanced" and not self.space_deemph > 0) or not self.font_zoom > 0:
            raise UserError("--space-deemph must be positive or balanced, and --font-zoom positive")
        if not 0 <= self.ce_label_smoothing < 1:
            raise UserError(f"--ce-label-smoothing {self.ce_label_smoothing} must be in [0, 1)")
        if self.renderer != "continuous" and not self.renderer.startswith("neural:"):
            raise UserError(f"--renderer {self.renderer!r} cannot drive the image loss: use continuous, or "
                            f"neural:CHECKPOINT from `asciiray train-renderer`")


@dataclass
class RunConfig:
    """The sections every training command shares."""

    data: DataSection = section(DataSection, "which pieces, split how, in which batches")
    optim: OptimSection = section(OptimSection, "how long and how the weights move")
    checkpoint: CheckpointSection = section(CheckpointSection, "where the run lives, which checkpoints it keeps")
    log: LogSection = section(LogSection, "what the run shows while it trains")
    resources: ResourcesSection = section(ResourcesSection, "where and on how much it trains")

    # The budget of a run given none (by optim field).
    default_budget: ClassVar[dict[str, int]] = {}

    def budgeted(self) -> RunConfig:
        """This config, with the command's default budget when it names no epochs, steps or minutes."""
        o = self.optim
        if o.n_epochs is not None or o.max_steps is not None or o.time_budget is not None:
            return self
        return dataclasses.replace(self, optim=dataclasses.replace(o, **self.default_budget))


@dataclass
class TrainConfig(RunConfig):
    """`asciiray train`: the VAE."""

    default_budget: ClassVar[dict[str, int]] = {"max_steps": DEFAULT_MAX_STEPS}

    model: VAEModelSection = section(VAEModelSection, "which VAE")
    loss: LossSection = section(LossSection, "the objective (the prototype's flag names)")


@dataclass
class RendererModelSection(Section):
    """Which neural renderer: a preset, with any size replaced."""

    preset: RENDERER_PRESETS = option("default", "renderer preset: default (64x64 grids), tiny (tests)")
    font_res: int | None = option(None, "pixels per character cell; match the VAE's --font-res (default: the "
                                        "preset's)")
    font_zoom: float | None = option(None, "font size relative to the cell; match the VAE's (default: the preset's)")
    channels: int | None = option(None, "feature channels per cell (default: the preset's)")
    depth: int | None = option(None, "residual 3x3 conv blocks (default: the preset's)")

    def overrides(self) -> dict[str, object]:
        """The sizes given, to lay over the preset."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}


@dataclass
class RendererTaskSection(Section):
    """What the renderer learns to draw, from which inputs."""

    target: Literal["discrete", "continuous"] = option(
        "discrete", "what to imitate: discrete (glyph of the argmax) or continuous (probability-weighted glyphs)")
    crop: int | None = option(None, "train on random crop x crop windows of the grids (default: whole grids): "
                                    "cheaper steps for the same per-cell task; validation draws whole grids")
    random_prop: float = option(0.5, "share of each training batch made of random grids instead of corpus grids")
    onehot_prop: float = option(0.25, "share of training cells left one-hot; the rest are perturbed")
    temperature_min: float = option(0.1, "lowest softmax temperature of the noisy-logit cells")
    temperature_max: float = option(3.0, "highest softmax temperature of the noisy-logit cells")

    def check(self) -> None:
        if not 0 <= self.random_prop < 1:
            raise UserError(f"--random-prop {self.random_prop} must be in [0, 1): some of each batch must be "
                            f"corpus grids")
        if not 0 <= self.onehot_prop <= 1:
            raise UserError(f"--onehot-prop {self.onehot_prop} must be in [0, 1]")
        if self.crop is not None:
            _at_least({"crop": self.crop}, 1)
        if not 0 < self.temperature_min <= self.temperature_max:
            raise UserError(f"--temperature-min {self.temperature_min} and --temperature-max "
                            f"{self.temperature_max} must be positive, min <= max")


def _renderer_optim() -> OptimSection:
    return OptimSection(learning_rate=3e-3, lr_schedule="constant")


@dataclass
class RendererTrainConfig(RunConfig):
    """`asciiray train-renderer`: the neural font renderer."""

    default_budget: ClassVar[dict[str, int]] = {"n_epochs": 4}

    optim: OptimSection = dataclasses.field(default_factory=_renderer_optim,
                                            metadata={"help": "how long and how the weights move", "section": True})
    model: RendererModelSection = section(RendererModelSection, "which renderer")
    task: RendererTaskSection = section(RendererTaskSection, "what it learns to draw")


# A resumed run keeps its config except these: where and on how much it runs, what it shows, and where it lives.
RUNTIME_PATHS = frozenset({"checkpoint.storage_path", "checkpoint.run_name", "checkpoint.resume"})
RUNTIME_SECTIONS = frozenset({"resources", "log"})


def is_runtime(path: str) -> bool:
    """True for a dotted key that a resumed run may change."""
    return path in RUNTIME_PATHS or path.split(".")[0] in RUNTIME_SECTIONS

