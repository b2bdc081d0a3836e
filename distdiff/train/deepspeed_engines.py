"""DeepSpeed engines: one per trainable network, with the same small surface as `TorchEngine`.

Each network gets its own `deepspeed.initialize` (its own optimizer, ZeRO partitioning, LR schedule
and clipping), so the U-Net, the DDGAN generator and the discriminator step independently inside one
training step. The DeepSpeed JSON is built from typed config fields, then the raw
`distributed.deepspeed` dict of the run config is merged over it (the escape hatch).

Under ZeRO-3 the parameters of `engine.module` are partitioned across ranks: anything that needs
full weights outside a forward pass (EMA, export) gathers them with `gathered_parameters`, which is
a collective call every rank must make.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from distdiff.config import DistributedConfig, OptimConfig, deep_merge
from distdiff.train.checkpoint import CheckpointError
from distdiff.train.engines import lr_factor

CHECKPOINT_TAG = "state"  # DeepSpeed's per-checkpoint subfolder; one checkpoint per engine folder
ENGINE_META = "deepspeed.json"  # world size / ZeRO stage / precision the engine was saved with
UNIVERSAL_DIR = "universal"  # where the universal (world-size independent) conversion lives
SHM_INFERENCE_OP = "deepspeed_shm_comm"  # DeepSpeed's CPU shared-memory all-reduce (inference kernels only)
# Networks that run at ZeRO-2 when ZeRO-3 is asked for: their parameters stay whole on every rank,
# gradients and optimizer states are still partitioned. The DDGAN discriminator needs it: its R1
# penalty differentiates through its own backward pass (create_graph), and that second-order graph
# holds weights that ZeRO-3 releases after the first pass.
ZERO3_RESIDENT = frozenset({"ddgan_d", "gan_d"})


def _optimizer_json(optim: OptimConfig, kind: str, fused: bool = False) -> dict:
    # torch_adam: DeepSpeed builds torch.optim.Adam(W) with these params instead of JIT-compiling its own
    # FusedAdam (a CUDA compiler at run time); "fused" reaches torch's fused kernel through it.
    params = {"lr": optim.lr, "betas": list(optim.betas), "eps": optim.eps,
              "weight_decay": optim.weight_decay, "torch_adam": True, "foreach": False}
    if fused:
        params["fused"] = True
    if kind == "adam":
        return {"type": "Adam", "params": {**params, "adam_w_mode": False}}
    if kind == "adamw":
        return {"type": "AdamW", "params": params}
    raise ValueError(f"unknown optimizer kind {kind!r}; valid: adam, adamw")


def build_deepspeed_config(optim: OptimConfig, kind: str, dist: DistributedConfig, precision: str,
                           micro_batch_size: int, load_universal: bool = False, name: str = "",
                           fused: bool = False) -> dict:
    """The DeepSpeed JSON of one network.

    Args:
        optim: the network's optimizer settings (lr, betas, eps, weight decay, warmup, clipping).
        kind: "adam" or "adamw".
        dist: ZeRO stage, gradient accumulation and the raw dict merged last.
        precision: "fp32" or "bf16".
        micro_batch_size: samples per rank per step.
        load_universal: resume from a universal checkpoint (the world size or ZeRO stage changed).
        name: the network's name (its ZeRO stage comes from `effective_zero_stage`).
        fused: torch's fused Adam(W) kernel.

    Returns:
        A plain dict for `deepspeed.initialize(config=...)`.
    """
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": dist.gradient_accumulation_steps,
        "optimizer": _optimizer_json(optim, kind, fused),
        "zero_optimization": {"stage": dist.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 2**31 - 1,  # the loop logs; DeepSpeed's own step prints are noise
        "wall_clock_breakdown": False,
    }
    if optim.grad_clip > 0:
        config["gradient_clipping"] = optim.grad_clip
    if optim.warmup_steps > 0 and optim.schedule != "cosine":  # a cosine schedule is a client scheduler
        config["scheduler"] = {"type": "WarmupLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": optim.lr, "warmup_num_steps": optim.warmup_steps,
            "warmup_type": "linear"}}
    merged = deep_merge(config, dist.deepspeed)
    merged["zero_optimization"]["stage"] = effective_zero_stage(name, dist)
    return merged


def effective_zero_stage(name: str, dist: DistributedConfig) -> int:
    """The ZeRO stage network `name` runs at: the one function that says it, for building the engine and
    for deciding whether a checkpoint needs a universal conversion.

    `distributed.zero_stage`, unless the raw DeepSpeed dict sets `zero_optimization.stage`; and stage 2
    instead of 3 for the networks that must stay whole (ZERO3_RESIDENT: a correctness requirement, so
    it wins over the raw dict).
    """
    stage = int(dist.deepspeed.get("zero_optimization", {}).get("stage", dist.zero_stage))
    return 2 if stage == 3 and name in ZERO3_RESIDENT else stage


def is_partitioned(module: nn.Module) -> bool:
    """True when ZeRO-3 manages the module's parameters (they may hold only a local shard)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextlib.contextmanager
def gathered_parameters(module: nn.Module):
    """Inside the block every parameter of `module` holds its full value, on every rank.

    A no-op unless ZeRO-3 partitions the module; then it is a collective (all ranks must enter).
    Changes made inside the block are discarded.
    """
    if not is_partitioned(module):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


class _EngineForward(nn.Module):
    """What tasks call to run a network: the DeepSpeed engine, or its bare module for side passes.

    A DeepSpeed forward hooks the outputs so that any backward through them runs the engine's
    gradient bookkeeping (reduction, accumulation counters). Two passes of a GAN step must not
    trigger it: the generator's loss flowing through the frozen discriminator (no gradient for
    the discriminator at all), and R1's input gradient of the discriminator (an inner
    `autograd.grad`, whose parameter gradients arrive later with the loss). Both go through the
    bare module, which carries ZeRO-3's parameter-gathering hooks but none of the bookkeeping.
    """

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def forward(self, *args, **kwargs):
        trains = any(p.requires_grad for p in self.engine.module.parameters())
        inputs = [*args, *kwargs.values()]
        input_grad = torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in inputs)
        if trains and not input_grad:
            return self.engine(*args, **kwargs)
        return self.engine.module(*args, **kwargs)


def _prepare_deepspeed() -> None:
    """Quiet DeepSpeed's info logs and keep it from compiling an op that training never calls.

    On CPU, DeepSpeed's communication backend JIT-compiles a shared-memory all-reduce used only by
    its inference kernels: about 40 s of both cores on every fresh machine (and again whenever the
    install path changes), competing with the first training steps. Marking the op incompatible
    before the backend starts makes it fall back to the process group, which training uses anyway.
    DeepSpeed's ZeRO still calls a torch collective under its deprecated name; the warning says
    nothing a user can act on, once per worker and run.
    """
    import deepspeed.ops
    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)
    deepspeed.ops.__compatible_ops__[SHM_INFERENCE_OP] = False
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)


class DeepSpeedEngine:
    """One network wrapped by `deepspeed.initialize`, with the `TorchEngine` surface.

    Args:
        module: the network on this rank's device (identical initial weights on every rank).
        ds_config: from `build_deepspeed_config`.
        lr_schedule: LR multiplier per optimizer step (`distdiff.train.engines.lr_factor`), for the
            schedules DeepSpeed's JSON does not express exactly (cosine).
    """

    def __init__(self, module: nn.Module, ds_config: dict, lr_schedule: Callable[[int], float] | None = None):
        import deepspeed

        _prepare_deepspeed()
        # DeepSpeed broadcasts and flattens parameters through byte views, which need a unit last stride:
        # channels-last weights go back to NCHW here. Channels-last inputs (`FastPath.batch_to`) still
        # make the convolutions compute channels-last.
        module = module.to(memory_format=torch.contiguous_format)
        self.config = ds_config
        # A client scheduler runs the plain engines' own LR curve, so both kinds of engine follow it exactly
        # (DeepSpeed's WarmupCosineLR spends its first step at lr 0 and needs a warm-up).
        client = (lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule)) if lr_schedule else None
        self.engine, _, _, _ = deepspeed.initialize(
            model=module, model_parameters=[p for p in module.parameters() if p.requires_grad], config=ds_config,
            lr_scheduler=client,
        )
        self.zero_stage = int(ds_config["zero_optimization"]["stage"])
        self.bf16 = bool(ds_config.get("bf16", {}).get("enabled", False))
        self.load_universal = bool(ds_config.get("checkpoint", {}).get("load_universal", False))
        self._forward = _EngineForward(self.engine)
        self._consolidated: dict | None = None

    @property
    def module(self) -> nn.Module:
        """The wrapped network (its parameters are shards under ZeRO-3)."""
        return self.engine.module

    @property
    def forward_module(self) -> nn.Module:
        """What tasks call: the engine for training passes, the bare module for side passes."""
        return self._forward

    @property
    def collective_forward(self) -> bool:
        """True when a forward pass is a collective (ZeRO-3): every rank must run it."""
        return self.zero_stage == 3

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    @property
    def partitioned(self) -> bool:
        return is_partitioned(self.engine.module)

    def full_weights(self):
        """`gathered_parameters` of the module: a collective under ZeRO-3, else a no-op."""
        return gathered_parameters(self.engine.module)

    def backward_step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward (scaled for gradient accumulation), clip, optimizer + LR step, zero grads."""
        self.engine.backward(loss)
        self.engine.step()
        self._consolidated = None
        stats = {"lr": self.lr}
        norm = self.engine.get_global_grad_norm() if "gradient_clipping" in self.config else None
        if norm is not None:
            stats["grad_norm"] = float(norm)
        return stats

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write this rank's part of the engine state (collective: every rank calls it)."""
        directory = Path(directory)
        # Ranks may stage into separate (node-local) folders: each creates its own tag folder.
        (directory / CHECKPOINT_TAG).mkdir(parents=True, exist_ok=True)
        self.engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        if self.engine.global_rank == 0:
            meta = {"world_size": self.engine.world_size, "zero_stage": self.zero_stage,
                    "precision": "bf16" if self.bf16 else "fp32", "tag": CHECKPOINT_TAG}
            (directory / ENGINE_META).write_text(json.dumps(meta))

    def load(self, directory: Path) -> None:
        """Restore the engine from `directory` (its universal conversion when so configured)."""
        directory = Path(directory)
        meta = read_engine_meta(directory)
        if self.load_universal:
            load_dir = directory / UNIVERSAL_DIR
            if not (load_dir / CHECKPOINT_TAG).is_dir():
                raise CheckpointError(f"{directory}: no universal conversion in {load_dir} (needed to resume "
                                      f"a {meta['world_size']}-rank ZeRO-{meta['zero_stage']} checkpoint here)")
        else:
            if needs_universal(meta, self.engine.world_size, self.zero_stage, self.bf16):
                raise CheckpointError(
                    f"{directory} was saved by {meta['world_size']} ranks with ZeRO-{meta['zero_stage']}; "
                    f"loading it on {self.engine.world_size} ranks with ZeRO-{self.zero_stage} needs a universal "
                    "conversion (the Ray launcher converts automatically)")
            load_dir = directory
        path, _ = self.engine.load_checkpoint(str(load_dir), tag=CHECKPOINT_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"DeepSpeed found no checkpoint '{CHECKPOINT_TAG}' in {load_dir}")
        self._consolidated = None

    # -- full weights --------------------------------------------------------------------------

    def consolidate(self) -> dict:
        """Gather the complete fp32 state dict (collective under ZeRO-3 or bf16: every rank calls it).

        Returns:
            {name: CPU tensor}, parameters in fp32 (the optimizer's master copy under bf16).
        """
        module = self.engine.module
        master = {}
        if self.bf16:  # the module holds bf16 copies; the optimizer keeps the fp32 master weights
            from deepspeed.utils import safe_get_full_fp32_param

            for name, param in module.named_parameters():
                full = safe_get_full_fp32_param(param)
                if full is not None:
                    master[name] = full.detach().float().cpu().clone()
        with gathered_parameters(module):
            state = {k: master.get(k, v.detach().cpu().clone()) for k, v in module.state_dict().items()}
        self._consolidated = state
        return state

    def full_state_dict(self) -> dict:
        """The complete fp32 state dict; under ZeRO-3/bf16 it needs `consolidate()` on every rank first."""
        if self._consolidated is not None:
            return self._consolidated
        if self.zero_stage == 3 or self.bf16:
            if self.engine.world_size > 1:
                raise RuntimeError("full_state_dict() of a ZeRO-3 or bf16 engine needs consolidate() to be "
                                   "called on every rank first (it gathers weights from all ranks)")
        return self.consolidate()

    def destroy(self) -> None:
        """Release DeepSpeed's hooks and buffers (before the process group is destroyed)."""
        self.engine.destroy()


def read_engine_meta(directory: Path) -> dict:
    """The world size / ZeRO stage / precision an engine folder was saved with."""
    path = Path(directory) / ENGINE_META
    if not path.is_file():
        raise CheckpointError(f"{directory}: {ENGINE_META} is missing (not a DeepSpeed engine checkpoint)")
    return json.loads(path.read_text())


def needs_universal(meta: dict, world_size: int, zero_stage: int, bf16: bool) -> bool:
    """True when an engine saved as `meta` must go through a universal conversion to load here.

    Plain data parallelism (ZeRO-0 in fp32) stores whole optimizer states, loadable at any world
    size; ZeRO 1-3 and DeepSpeed's bf16 optimizer store per-rank shards.

    Raises:
        CheckpointError: for a change DeepSpeed cannot restore exactly (to or from ZeRO-0 in fp32).
    """
    saved_plain = meta["zero_stage"] == 0 and meta["precision"] == "fp32"
    plain = zero_stage == 0 and not bf16
    if saved_plain != plain:
        raise CheckpointError(
            f"cannot resume a ZeRO-{meta['zero_stage']} {meta['precision']} engine checkpoint with ZeRO-{zero_stage} "
            f"{'bf16' if bf16 else 'fp32'}: optimizer states do not convert between plain data parallelism "
            "and ZeRO; keep distributed.zero_stage and precision as they were")
    same_layout = (meta["world_size"] == world_size and meta["zero_stage"] == zero_stage
                   and meta["precision"] == ("bf16" if bf16 else "fp32"))
    return not saved_plain and not same_layout


def deepspeed_engine_factory(dist: DistributedConfig, precision: str, micro_batch_size: int,
                             universal: frozenset[str] = frozenset(), fused: bool = False):
    """An `EngineFactory` for the stage builders: `make(name, module, optim_cfg, kind)`.

    Args:
        universal: names of the networks to restore from their universal conversion.
        fused: torch's fused Adam(W) kernel.
    """

    def make(name: str, module: nn.Module, optim: OptimConfig, kind: str) -> DeepSpeedEngine:
        config = build_deepspeed_config(optim, kind, dist, precision, micro_batch_size, name in universal, name=name,
                                        fused=fused)
        return DeepSpeedEngine(module, config, lr_factor(optim) if optim.schedule == "cosine" else None)

    return make
