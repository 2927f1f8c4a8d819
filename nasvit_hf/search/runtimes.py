"""The runtimes latency is measured on: eager PyTorch, or onnxruntime through the deployment export.

A B-model is only faster where it is measured, so search times subnets on the runtime its users deploy with
(`latency.backend` in the search config):

- `eager`: the extracted subnet's forward in PyTorch (`torch.no_grad`, eval mode: the inference plan), with
  `num_threads` intra-op threads on `device`;
- `onnxruntime`: the extracted subnet exported by `nasvit_hf.deploy.export_onnx` (the exporter of
  `recipes/deploy.py`: the graph laid out for onnxruntime and, with `quantize: int8`, its int8 graph, calibrated
  on random images since only its speed is measured) at a fixed batch size, then run by an `OnnxRunner` session
  (CPU provider, `num_threads` intra-op threads).

Every backend hands back a `Timed` callable (one batch per call) and every measurement reads the time from one
`clock` (`latency.clock`: wall time by default, or this process's CPU time on a shared machine), so tests drive the
whole pipeline with a fake clock. `runtime_record`
describes where a latency was measured (backend, threads, batch, device, machine, package versions); it is written
next to every latency the search reports.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "CLOCKS",
    "Clock",
    "EagerBackend",
    "LatencyBackend",
    "OnnxRuntimeBackend",
    "RuntimeSpec",
    "Timed",
    "check_num_threads",
    "machine_description",
    "make_backend",
    "runtime_record",
    "time_repeats",
    "torch_threads",
]

BACKENDS = ("eager", "onnxruntime")
QUANTIZE_CHOICES = (None, "int8")
Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter)
# "wall": elapsed time, what a user waits for. "process": the CPU time of this process (time.process_time), what the
# batch costs one core whatever else runs on the machine: on a shared machine it is what an idle one would measure
# (one intra-op thread only: with more, CPU time adds the threads up).
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "process": time.process_time}


def machine_description() -> str:
    """Where a latency was measured: CPU model (or CUDA device), OS, torch version."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{processor}; {platform.system()} {platform.release()}; torch {torch.__version__}"


def _version(name: str) -> str | None:
    """The version of a package as the running process has it (the imported module's `__version__`), else as
    installed."""
    module = sys.modules.get(name)
    if getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_num_threads(num_threads: Any) -> int | None:
    """`num_threads` as an int (Python or numpy integers), or None (the runtime's default); anything else (a bool, a
    float, a string, < 1) is a ValueError. The one check of every latency and thread setting."""
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None (torch's default), got {num_threads!r}.")
    return int(num_threads)


@dataclass(frozen=True)
class RuntimeSpec:
    """Which runtime latency is measured on, and how (the search config's `latency` section chooses it)."""

    backend: str = "eager"  # eager | onnxruntime
    device: str = "cpu"  # onnxruntime: cpu only (the CPU execution provider)
    num_threads: int | None = 1  # intra-op threads (None: the runtime's default)
    batch_size: int = 1
    quantize: str | None = None  # onnxruntime only: None (fp32) or "int8"
    clock: str = "wall"  # wall | process (`CLOCKS`)

    def __post_init__(self):
        object.__setattr__(self, "num_threads", check_num_threads(self.num_threads))  # numpy ints become ints
        if self.clock not in CLOCKS:
            raise ValueError(f"latency.clock must be one of {list(CLOCKS)}, got {self.clock!r}.")
        if self.clock == "process" and self.num_threads != 1:
            raise ValueError(
                f"latency.clock: process measures this process's CPU time, which adds up its threads: it needs "
                f"latency.num_threads: 1 (got {self.num_threads}); use latency.clock: wall for more threads."
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"latency.backend must be one of {list(BACKENDS)}, got {self.backend!r}.")
        if self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"latency.quantize must be null (fp32) or 'int8', got {self.quantize!r}.")
        if self.quantize is not None and self.backend != "onnxruntime":
            raise ValueError(
                f"latency.quantize: {self.quantize} is an onnxruntime graph option; set latency.backend: onnxruntime "
                "(or drop latency.quantize to time eager PyTorch)."
            )
        if self.backend == "onnxruntime" and self.device not in ("auto", "cpu") and not self.device.startswith("cpu:"):
            raise ValueError(
                f"latency.backend onnxruntime times the CPU execution provider, but latency.device is "
                f"{self.device!r}: set latency.device: cpu (or latency.backend: eager to time PyTorch on "
                f"{self.device})."
            )


def runtime_record(spec: RuntimeSpec) -> dict[str, Any]:
    """What a latency was measured on: the backend and its settings, the machine and the package versions."""
    packages = ["torch", "nasvit_hf"] + (
        ["onnxruntime", "onnx", "onnxscript"] if spec.backend == "onnxruntime" else []
    )
    record = asdict(spec)
    if spec.backend == "onnxruntime":
        record["graph"] = "nasvit_hf.deploy.export_onnx" + (f" ({spec.quantize})" if spec.quantize else " (fp32)")
    record["machine"] = machine_description()
    record["versions"] = {name: _version(name) for name in packages}
    return record


def time_repeats(
    call: Callable[[], Any], *, warmup: int, repeats: int, clock: Clock = time.perf_counter
) -> list[float]:
    """Milliseconds of `repeats` timed calls of `call`, after `warmup` untimed ones, read from `clock`."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append((clock() - start) * 1000.0)
    return times


def quartiles(times: list[float]) -> tuple[float, float, float]:
    """(q25, median, q75) of timings (all equal for a single one)."""
    if len(times) == 1:
        return times[0], times[0], times[0]
    q25, _, q75 = statistics.quantiles(times, n=4)
    return float(q25), float(statistics.median(times)), float(q75)


@dataclass
class Timed:
    """One subnet ready to run on a backend: `call()` runs one batch; `threads()` is the context the runtime's
    thread setting holds in while it is timed."""

    call: Callable[[], Any]
    resolution: int
    threads: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    num_threads: int | None = None  # what the runtime ran with
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the export's seconds and graph file size


class LatencyBackend:
    """Makes extracted subnets `Timed` on one runtime (`spec`), all timed with `clock`."""

    name = "backend"

    def __init__(self, spec: RuntimeSpec, clock: Clock | None = None):
        self.spec = spec
        self.clock = clock if clock is not None else CLOCKS[spec.clock]
        self._record: dict[str, Any] | None = None

    def prepare(self, model: nn.Module, resolution: int) -> Timed:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """`runtime_record(spec)`, computed once per backend (package lookups are slow)."""
        if self._record is None:
            self._record = runtime_record(self.spec)
        return dict(self._record)

    def time(self, timed: Timed, *, warmup: int, repeats: int) -> list[float]:
        """Milliseconds of `repeats` calls of a prepared subnet after `warmup` ones, under the runtime's threads."""
        with timed.threads():
            return time_repeats(timed.call, warmup=warmup, repeats=repeats, clock=self.clock)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run with `num_threads` intra-op threads (None: leave torch's setting), restoring the previous setting.

    Tiny models are dominated by per-op overhead: on a busy CPU, extra OpenMP threads spin against other processes
    and one thread can be 10x faster."""
    num_threads = check_num_threads(num_threads)
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class EagerBackend(LatencyBackend):
    """`model(pixel_values=...)` in PyTorch: eval mode, `torch.no_grad`, on `spec.device`, `spec.num_threads`
    intra-op threads while timed."""

    name = "eager"

    def prepare(self, model: nn.Module, resolution: int) -> Timed:
        device = torch.device(self.spec.device)
        model.eval().to(device)
        channels = getattr(getattr(model, "config", None), "num_channels", 3)
        generator = torch.Generator().manual_seed(0)
        pixel_values = torch.randn(self.spec.batch_size, channels, resolution, resolution, generator=generator)
        pixel_values = pixel_values.to(device)

        def call() -> None:
            with torch.no_grad():
                model(pixel_values=pixel_values)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        with torch_threads(self.spec.num_threads):
            num_threads = torch.get_num_threads()
        return Timed(call, resolution, lambda: torch_threads(self.spec.num_threads), num_threads)


class OnnxRuntimeBackend(LatencyBackend):
    """The subnet exported by `nasvit_hf.deploy.export_onnx` (fixed batch `spec.batch_size`, not verified: the
    graph is the one `recipes/deploy.py` writes, only timed here) and run by an `OnnxRunner` session with
    `spec.num_threads` intra-op threads. The graph file is written to a temporary folder, removed once the session
    has loaded it."""

    name = "onnxruntime"

    def __init__(self, spec: RuntimeSpec, clock: Clock | None = None, export_kwargs: dict | None = None):
        super().__init__(spec, clock)
        self.export_kwargs = dict(export_kwargs or {})
        if spec.quantize is not None:
            self.export_kwargs["quantize"] = spec.quantize

    def _timing_calibration(self, model: nn.Module, resolution: int):
        """int8 needs calibration images; for timing, seeded random ones at the subnet's input size: the int8 graph's
        operators and shapes (what its latency depends on) do not depend on the ranges they set. Its top-1 is not
        measured here (no labels); `recipes/deploy.py --quantize int8` measures it on real images."""
        from ..deploy import QuantizationData

        generator = torch.Generator().manual_seed(0)
        channels = model.config.num_channels
        images = torch.randn(2 * self.spec.batch_size, channels, resolution, resolution, generator=generator)
        return QuantizationData(images, images[: self.spec.batch_size], None, "random images (latency timing only)")

    def prepare(self, model: nn.Module, resolution: int) -> Timed:
        from ..deploy import OnnxRunner, export_onnx

        folder = tempfile.mkdtemp(prefix="nasvit-latency-")
        try:
            path = os.path.join(folder, "model.onnx")
            start = time.perf_counter()
            kwargs = dict(self.export_kwargs)
            if kwargs.get("quantize") and "calibration" not in kwargs:
                kwargs["calibration"] = self._timing_calibration(model, resolution)
            report = export_onnx(model, path, batch_size=self.spec.batch_size, verify=False, **kwargs)
            seconds = time.perf_counter() - start
            runner = OnnxRunner(path, num_threads=self.spec.num_threads)  # the session holds the graph in memory
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        generator = torch.Generator().manual_seed(0)
        height, width = runner.input_size
        pixel_values = torch.randn(self.spec.batch_size, runner.num_channels, height, width, generator=generator)
        feed = {runner.input_name: pixel_values.numpy()}
        session, outputs = runner.session, runner.output_names

        def call() -> None:
            session.run(outputs, feed)

        details = {"export_seconds": seconds, "graph_bytes": report.file_size_bytes, "opset": report.opset}
        if getattr(report, "graph", None) is not None:  # which graph the export wrote, where the report says
            details["export_graph"] = report.graph
        return Timed(call, resolution, num_threads=self.spec.num_threads, details=details)


def make_backend(spec: RuntimeSpec, clock: Clock | None = None) -> LatencyBackend:
    """The backend `spec.backend` names, timed with `clock` (default: the one `spec.clock` names)."""
    return {"eager": EagerBackend, "onnxruntime": OnnxRuntimeBackend}[spec.backend](spec, clock=clock)
