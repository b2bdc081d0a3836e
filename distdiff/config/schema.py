"""The run configuration: one typed tree, loaded from YAML and saved with every run.

Defaults describe the embedded-MNIST demo (tiny presets that train on a CPU in minutes);
`configs/*.yaml` override what an experiment changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

# The names of `distdiff.data.embedded.EMBEDDED_DATASETS` (the config layer imports no other package;
# tests/test_config.py checks that the two agree).
EMBEDDED_SOURCES = ("embedded-mnist", "embedded-stacked-mnist")

Precision = Literal["fp32", "bf16"]


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule of one network.

    The learning rate rises linearly over `warmup_steps`, then stays at `lr` ("constant") or follows
    a half cosine from `lr` down to `min_lr` over `decay_steps` optimizer steps ("cosine"; 0 means
    the stage's length).
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = 0.0
    decay_steps: int = 0

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("warmup_steps and grad_clip must be >= 0")
        if not 0 <= self.min_lr <= self.lr or self.decay_steps < 0:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}] and decay_steps >= 0, got {self.min_lr}, "
                             f"{self.decay_steps}")


@dataclass
class DataConfig:
    """Where training images (or latents) come from."""

    # "embedded-mnist", "embedded-stacked-mnist", or a local folder / s3://bucket/prefix of shards
    source: str = "embedded-mnist"
    num_workers: int = 0  # loader workers per rank
    stacked_size: int = 20000  # images drawn for embedded Stacked MNIST
    hflip: bool = False  # random horizontal flips (CIFAR-10, CelebA-HQ recipes), repeated exactly on resume

    @property
    def is_embedded(self) -> bool:
        return self.source.startswith("embedded-")

    def validate(self) -> None:
        if self.source.startswith("embedded-") and self.source not in EMBEDDED_SOURCES:
            raise ValueError(
                f"data.source '{self.source}' is not an embedded dataset; "
                f"valid: {', '.join(EMBEDDED_SOURCES)}, a folder, or s3://bucket/prefix"
            )


@dataclass
class StageConfig:
    """Loop settings of one training stage (stage 1: VAE; stage 2: LDM + DDGAN)."""

    steps: int = 1000
    batch_size: int = 64  # per rank
    log_every: int = 25
    checkpoint_every: int = 500
    sample_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 3
    num_samples: int = 64  # images in each sample grid

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("log_every, checkpoint_every and keep_checkpoints must be >= 1")


@dataclass
class VAEConfig:
    """Stage 1: the KL autoencoder."""

    preset: str = "mnist-f4"
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"
    kl_weight: float = 1e-4  # beta in recon + beta * KL
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.0))
    # exported VAE weights for stage 2; None = this run's own stage-1 export
    checkpoint: Optional[str] = None
    scale_batches: int = 8  # batches used to estimate the latent scale factor


@dataclass
class TextConfig:
    """Caption conditioning of the U-Net: a small transformer text encoder trained with it.

    The tokenizer is word level over the vocabulary of the dataset's captions (`distdiff.text`);
    captions are dropped (replaced by the empty caption) with probability `caption_dropout` for
    classifier-free guidance.
    """

    enabled: bool = False
    width: int = 64
    layers: int = 2
    heads: int = 4
    cross_attention_levels: tuple[int, ...] = (0, 1)  # U-Net levels with cross-attention (and the middle)
    caption_dropout: float = 0.1

    def validate(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"ldm.text.width {self.width} must be divisible by ldm.text.heads {self.heads}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"ldm.text.caption_dropout must be in [0, 1), got {self.caption_dropout}")


@dataclass
class LDMConfig:
    """Stage 2a: the DDPM U-Net on scaled VAE latents."""

    enabled: bool = True
    preset: str = "small"
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: Literal["linear", "scaled_linear", "cosine"] = "linear"
    class_conditional: bool = False
    label_dropout: float = 0.1  # for classifier-free guidance
    guidance_scale: float = 1.0
    ema_decay: float = 0.999
    ddim_steps: int = 50
    # 0 = deterministic DDIM; 1 = DDPM's posterior noise on the DDIM step grid, which stays on the data
    # manifold far earlier in training (short demo runs) at the same cost.
    ddim_eta: float = 0.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, weight_decay=0.0))
    text: TextConfig = field(default_factory=TextConfig)

    def validate(self) -> None:
        if self.text.enabled and self.class_conditional:
            raise ValueError("ldm.text.enabled and ldm.class_conditional exclude each other: pick one condition")
        if not 1 <= self.ddim_steps <= self.num_steps:
            raise ValueError(f"ldm.ddim_steps must be in [1, ldm.num_steps={self.num_steps}], got {self.ddim_steps}")
        if self.ddim_eta < 0:
            raise ValueError(f"ldm.ddim_eta must be >= 0, got {self.ddim_eta}")


@dataclass
class DDGANConfig:
    """Stage 2b: a Denoising Diffusion GAN on the same latents (`gan`: the same with T = 1)."""

    enabled: bool = True
    preset: str = "small"
    num_steps: Optional[int] = None  # None: the preset's T
    beta_min: float = 0.1
    beta_max: float = 20.0
    r1_gamma: float = 0.02
    lazy_reg: int = 15  # R1 on every k-th discriminator step
    # "official": gamma / 2 * E||grad||^2 on those steps, as DDGAN's training script; "stylegan2": times k.
    r1_scaling: Literal["official", "stylegan2"] = "official"
    ema_decay: float = 0.999
    g_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.6e-4, betas=(0.5, 0.9), grad_clip=0.0))
    d_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.25e-4, betas=(0.5, 0.9), grad_clip=0.0))

    def validate(self) -> None:
        if self.lazy_reg < 1:
            raise ValueError("lazy_reg must be >= 1")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 (1: the one-step GAN baseline), got {self.num_steps}")


@dataclass
class SegConfig:
    """The segmentation U-Net (Ronneberger et al.) on the embedded digit canvases or on users' image / mask
    shards (`train-seg`)."""

    preset: str = "small"  # its in_channels and num_classes follow the data
    # Segmentation shards (`make_shards seg`: a folder or s3://bucket/prefix) to train on instead of the
    # embedded canvases, and the held-out shards to score on; both or neither.
    data: Optional[str] = None
    test_data: Optional[str] = None
    canvas_side: int = 256  # the embedded canvases (without seg.data):
    train_canvases: int = 200  # from the first 80 % of each digit class
    test_canvases: int = 16  # held out: from the other 20 %
    digits: tuple[int, int] = (24, 40)  # fewest and most digits per canvas
    tile_output: int = 60  # output side of a training tile, rounded up to a valid one
    flips: bool = True
    elastic_std: float = 10.0  # pixels, on a 3 x 3 grid of displacements (the paper's 10); 0: none
    border_weights: bool = True  # the paper's w(x); False: plain cross entropy
    w0: float = 10.0
    sigma: float = 5.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.0))

    def validate(self) -> None:
        if self.canvas_side < 28 or self.train_canvases < 1 or self.test_canvases < 1 or self.tile_output < 1:
            raise ValueError("seg: canvas_side >= 28, train_canvases >= 1, test_canvases >= 1 and tile_output >= 1 "
                             "required")
        if len(self.digits) != 2 or not 1 <= self.digits[0] <= self.digits[1]:
            raise ValueError(f"seg.digits must be [fewest, most] with 1 <= fewest <= most, got {list(self.digits)}")
        if (self.data is None) != (self.test_data is None):
            raise ValueError("seg.data and seg.test_data go together: training shards need held-out shards to be "
                             "scored on (write both with `make_shards seg`)")


@dataclass
class EvalConfig:
    """Scoring the stage-2 models at the end of a pipeline run (and in the trilemma study)."""

    enabled: bool = False
    # "all" (every model's exported samplers) or MODEL[:SAMPLER[:STEPS]] items, e.g. [ldm:ddim, ddgan]
    samplers: list[str] = field(default_factory=lambda: ["all"])
    num_samples: int = 1000  # per model and sampler, the same for all (FID depends on it)
    features: Literal["inception", "fd-mnist"] = "fd-mnist"  # "inception" is reported as FID
    reference_size: int = 0  # reference images (0: the whole training set)
    pr_samples: int = 1000  # per set for precision/recall (0: skip)
    batch_size: int = 100
    # MNIST classifier stem for FD-MNIST features and Stacked-MNIST modes; None: train the embedded one
    # (about a minute on 2 CPU cores) and cache it
    classifier: Optional[str] = None
    grid_count: int = 64
    # Ray evaluation workers (0: distributed.num_workers) and CPUs each (0: distributed.cpus_per_worker).
    # Small networks sample faster in several one-thread processes than in one multi-threaded one.
    num_workers: int = 0
    cpus_per_worker: int = 0

    def validate(self) -> None:
        if self.num_workers < 0 or self.cpus_per_worker < 0:
            raise ValueError("evaluation.num_workers and evaluation.cpus_per_worker must be >= 0")
        if self.num_samples < 2 or self.batch_size < 1 or self.reference_size < 0 or self.pr_samples < 0:
            raise ValueError("evaluation: num_samples >= 2, batch_size >= 1, reference_size >= 0 and "
                             "pr_samples >= 0 required")


@dataclass
class DistributedConfig:
    """How Ray and the training backend run the workers (--local runs read only `backend`)."""

    # "deepspeed" (ZeRO engines, any number of workers), "torch" (plain PyTorch, one process) or "auto":
    # deepspeed under Ray, torch with --local (see distdiff/train/backends.py).
    backend: Literal["auto", "deepspeed", "torch"] = "auto"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    zero_stage: int = 2
    gradient_accumulation_steps: int = 1
    storage_path: Optional[str] = None  # local folder or s3://bucket/prefix; None = output_dir
    max_failures: int = 3
    deepspeed: dict = field(default_factory=dict)  # raw DeepSpeed JSON merged last

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError("distributed.num_workers must be >= 1")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"distributed.zero_stage must be 0..3, got {self.zero_stage}")


Switch = Union[bool, Literal["auto"]]  # true / false (YAML's on / off too), or "auto"


@dataclass
class PerfConfig:
    """The fast path of the training step (`distdiff.train.fast`). "auto" turns a switch on where it was
    measured to pay: on CUDA devices, and on a CPU none (`launch/bench_gpu.py --cpu-step` measures each)."""

    compile: Switch = "auto"  # torch.compile of each network's forward (discriminators stay eager: R1)
    compile_backend: str = "inductor"  # "aot_eager" traces without generating code (tests)
    compile_mode: str = "default"  # or "max-autotune-no-cudagraphs", "reduce-overhead"
    channels_last: Switch = "auto"  # NHWC activations and weights for the convolution networks
    fused_optimizer: Switch = "auto"  # torch.optim.Adam(W)(fused=True), also under DeepSpeed (torch_adam)
    tf32: bool = True  # TF32 matmuls and convolutions for fp32 work on CUDA
    prefetch: Switch = "auto"  # the next batch drawn (and pinned) in a thread while the step runs

    def validate(self) -> None:
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.compile_mode not in modes:
            raise ValueError(f"perf.compile_mode must be one of {', '.join(modes)}, got {self.compile_mode!r}")


@dataclass
class RunConfig:
    """Everything one run needs; saved resolved as config.yaml in the run directory."""

    name: str = "mnist-embedded"
    output_dir: str = "runs"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "fp32"
    space: Literal["latent", "pixel"] = "latent"  # stage 2 on VAE latents, or on pixels directly
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)
    ddgan: DDGANConfig = field(default_factory=DDGANConfig)
    # The one-step GAN baseline: the DDGAN's networks and losses with T = 1 (off unless enabled).
    gan: DDGANConfig = field(default_factory=lambda: DDGANConfig(enabled=False, num_steps=1))
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=400, batch_size=64))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=800, batch_size=64))
    stage_seg: StageConfig = field(default_factory=lambda: StageConfig(steps=600, batch_size=8))
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")
        if not (self.ldm.enabled or self.ddgan.enabled or self.gan.enabled):
            raise ValueError("ldm, ddgan and gan are all disabled: stage 2 would train nothing")
