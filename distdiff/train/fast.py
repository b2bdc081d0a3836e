"""The fast path of the training step: compiled forwards, channels-last, fused optimizers, TF32, and the
next batch drawn while the step runs.

Every switch of `PerfConfig` is true, false or "auto". `FastPath.resolve` turns them into plain booleans
once per worker for its device, and the stage builders, the engines and the loop read that one record.
"auto" means what was measured to pay: everything on CUDA, nothing on a CPU (`launch/bench_gpu.py
--cpu-step` on the main job's stage-2 step, 2-core CPU: compiling makes the step 1.43x faster but costs
233 s, paid back after about 3,300 of the job's 900 steps; fused Adam, channels-last and bf16 were slower).

bf16 is the run's `precision` (autocast in the loop, DeepSpeed's bf16 mode with fp32 master weights in
the engines); the stage-2 VAE encode runs inside the step, so under the same autocast as the training.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import shutil
import threading
from dataclasses import dataclass

import torch

from distdiff.config import PerfConfig


def _pick(switch, auto: bool) -> bool:
    return auto if switch == "auto" else bool(switch)


def fused_optimizer(perf: PerfConfig, device_type: str) -> bool:
    """Whether Adam(W) runs fused (one kernel over all parameters); "auto": on CUDA devices."""
    return _pick(perf.fused_optimizer, device_type == "cuda")


def compile_unavailable(backend: str, device: torch.device) -> str | None:
    """Why `torch.compile` with `backend` cannot run here, or None when it can."""
    import torch._dynamo

    try:
        torch._dynamo.eval_frame.check_if_dynamo_supported()
    except RuntimeError as err:
        return str(err)
    if backend != "inductor":
        return None
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "the inductor backend needs triton on CUDA devices (pip install triton)"
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")):
        return "the inductor backend needs a C++ compiler on CPUs (g++ or clang++, or CXX)"
    return None


@dataclass(frozen=True)
class FastPath:
    """The resolved switches of one worker (all off: plain eager PyTorch)."""

    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    channels_last: bool = False
    fused_optimizer: bool = False
    tf32: bool = False
    prefetch: bool = False
    notes: tuple[str, ...] = ()  # why a switch that was asked for is off

    @classmethod
    def resolve(cls, perf: PerfConfig, device: torch.device) -> FastPath:
        cuda = device.type == "cuda"
        compiled, notes = _pick(perf.compile, cuda), []
        if compiled and (reason := compile_unavailable(perf.compile_backend, device)):
            notes.append(f"torch.compile is off: {reason}; the networks run eagerly")
            compiled = False
        return cls(compile=compiled, compile_backend=perf.compile_backend, compile_mode=perf.compile_mode,
                   channels_last=_pick(perf.channels_last, cuda), fused_optimizer=fused_optimizer(perf, device.type),
                   tf32=perf.tf32 and cuda, prefetch=_pick(perf.prefetch, cuda), notes=tuple(notes))

    def describe(self) -> str:
        """One line for the console: what is on."""
        parts = [f"torch.compile ({self.compile_backend})" if self.compile else "",
                 "channels-last" if self.channels_last else "", "fused Adam" if self.fused_optimizer else "",
                 "TF32" if self.tf32 else "", "prefetch" if self.prefetch else ""]
        on = ", ".join(p for p in parts if p) or "plain eager"
        return "; ".join([f"fast path: {on}", *self.notes])

    def apply_globals(self) -> None:
        """Process-wide settings (TF32 on CUDA)."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def layout(self, module: torch.nn.Module) -> torch.nn.Module:
        """The network in the memory format of the fast path (before an engine wraps it)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def compile_kwargs(self) -> dict:
        # mode is an inductor option: other backends refuse it
        kwargs = {"backend": self.compile_backend}
        if self.compile_backend == "inductor":
            kwargs["mode"] = self.compile_mode
        return kwargs

    def compile_engines(self, engines, eager: frozenset[str] = frozenset()) -> list[str]:
        """Compile the forward of every engine's network in place (`nn.Module.compile`: state-dict keys,
        checkpoints and exports stay those of the plain network).

        Args:
            engines: an `EngineSet`.
            eager: networks that must stay eager: a discriminator's R1 penalty differentiates through its
                own backward pass, which compiled graphs do not support.

        Returns:
            the names compiled. Networks that ZeRO-3 partitions stay eager too: their parameters are
            gathered by hooks that the compiler does not trace.
        """
        if not self.compile:
            return []
        compiled = []
        for name, engine in engines.items():
            if name in eager or engine.partitioned:
                continue
            engine.module.compile(**self.compile_kwargs())
            compiled.append(name)
        return compiled

    def batch_to(self, batch: dict, device: torch.device) -> dict:
        """A batch on `device` (non-blocking from pinned memory), images channels-last where the path is."""
        out = {}
        for key, value in batch.items():
            if torch.is_tensor(value):
                value = value.to(device, non_blocking=True)
                if self.channels_last and value.dim() == 4 and value.is_floating_point():
                    value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    def wrap_stream(self, stream, device: torch.device):
        """`stream`, drawn ahead in a thread when the path prefetches."""
        return PrefetchStream(stream, pin=device.type == "cuda") if self.prefetch else stream


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class PrefetchStream:
    """A batch stream whose next batches are drawn (and pinned, for an asynchronous copy to the GPU) in a
    background thread while the step runs.

    `state_dict` is the inner stream's state taken right after the batch last handed out, so a checkpoint
    never counts a batch still waiting in the queue and a resume continues exactly where the step was.
    Other attributes (`metrics`, ...) are the inner stream's.
    """

    def __init__(self, stream, pin: bool = False, depth: int = 2):
        self.stream, self.pin, self.depth = stream, pin, depth
        self._state = None

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def state_dict(self) -> dict:
        return self._state if self._state is not None else self.stream.state_dict()

    def load_rank_states(self, states) -> None:
        self.stream.load_rank_states(states)
        self._state = None

    def _pinned(self, batch: dict) -> dict:
        if not self.pin:
            return batch
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}

    def __iter__(self):
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self.stream:
                    if not put((self._pinned(batch), self.stream.state_dict())):
                        return
                put(_END)
            except BaseException as err:  # handed to the consumer, raised there
                put(_Failure(err))

        thread = threading.Thread(target=produce, name="distdiff-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                batch, self._state = item
                yield batch
        finally:
            stop.set()
