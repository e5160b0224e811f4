"""The device a stage task computes on: the GPU the pilot gave it (``runtime/gpus.py``), or the CPU, and why.

Both helpers fall back to the CPU only when the task holds a GPU it cannot use (a CPU-only torch,
no OpenMM GPU platform, no driver) and say why in ``note``; a task that holds no GPU runs on the CPU
with no note (the campaign says once why it asked for none).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from ..runtime import gpus
from .errors import StageInputError

GPU_PLATFORMS = ("CUDA", "HIP", "OpenCL")  # tried in this order by "auto"
PLATFORMS = ("auto", "CPU", "Reference", *GPU_PLATFORMS)
PRECISIONS = ("mixed", "single", "double")


def torch_device(torch: Any) -> tuple[Any, str]:
    """``(torch.device, note)`` for this task: ``cuda:N`` (ROCm builds use the same name) or ``cpu``.

    Call it at the start of every call: in a persistent worker each call may hold another GPU, and the
    first one makes every GPU of the node visible to the process (see :func:`runtime.gpus.bind`).
    """
    binding = gpus.bind(prepare=not torch.cuda.is_initialized())
    if not binding.devices:
        return torch.device("cpu"), ""
    if not torch.cuda.is_available():
        return torch.device("cpu"), (
            f"GPU {','.join(binding.devices)} visible but torch {torch.__version__} sees "
            "none (a CPU-only build, or no driver): ran on CPU"
        )
    ordinal = binding.ordinals[0]
    if ordinal >= torch.cuda.device_count():
        return torch.device("cpu"), (
            f"held GPU {binding.devices[0]} but this process sees {torch.cuda.device_count()} GPU(s): ran on CPU"
        )
    return torch.device("cuda", ordinal), ""


def device_label(torch: Any, device: Any) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what a report says the task ran on."""
    if device.type != "cuda":
        return "cpu"
    return f"{device} ({torch.cuda.get_device_name(device)})"


@dataclass(frozen=True)
class PlatformChoice:
    """An OpenMM platform for this task, its properties, and why it is not the one asked for."""

    name: str
    properties: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        precision = self.properties.get("Precision")
        return f"{self.name} ({precision})" if precision else self.name

    def scoring_properties(self) -> dict[str, str]:
        """MM/GBSA energies are differences of large sums: double precision wherever there is a choice."""
        return {**self.properties, "Precision": "double"} if "Precision" in self.properties else dict(self.properties)


@functools.lru_cache(maxsize=8)
def openmm_platform(requested: str, precision: str = "mixed", threads: int | None = None) -> PlatformChoice:
    """The OpenMM platform for a task that asks for ``requested`` (``auto``: a GPU platform if it holds a GPU).

    A GPU platform is checked by making a one-particle context on the task's device; ``auto`` falls back
    to the next (CUDA, HIP, OpenCL), then to CPU with a note. A GPU platform named explicitly that does not
    work is an error.
    """
    if requested not in PLATFORMS:
        raise StageInputError(f"MDSettings.platform: {requested!r} is not one of {PLATFORMS}")
    if precision not in PRECISIONS:
        raise StageInputError(f"MDSettings.precision: {precision!r} is not one of {PRECISIONS}")
    cpu = PlatformChoice("CPU", {"Threads": str(threads)} if threads else {})
    if requested in ("CPU", "Reference"):
        return cpu if requested == "CPU" else PlatformChoice("Reference")
    binding = gpus.bind()
    if requested == "auto" and not binding.devices:
        return cpu
    ordinal = binding.ordinals[0] if binding.ordinals else 0
    tried = []
    for name in GPU_PLATFORMS if requested == "auto" else (requested,):
        index_key = "OpenCLDeviceIndex" if name == "OpenCL" else "DeviceIndex"
        properties = {index_key: str(ordinal), "Precision": precision}
        problem = _try_platform(name, properties)
        if not problem:
            return PlatformChoice(name, properties)
        tried.append(f"{name}: {problem}")
    if requested != "auto":
        raise StageInputError(f"MDSettings.platform: {requested} does not work here ({'; '.join(tried)})")
    held = ",".join(binding.devices)
    return PlatformChoice(
        cpu.name,
        cpu.properties,
        f"GPU {held} visible but no OpenMM GPU platform works ({'; '.join(tried)}): ran on CPU",
    )


def _try_platform(name: str, properties: dict[str, str]) -> str:
    """'' if a context can be made on platform ``name`` with ``properties``, else why not."""
    import openmm

    try:
        platform = openmm.Platform.getPlatformByName(name)
    except Exception:  # noqa: BLE001 - OpenMMException: the plugin is not installed or did not load
        failures = [f for f in openmm.Platform.getPluginLoadFailures() if f"OpenMM{name}" in f]
        return "not installed" + (f" ({' '.join(failures[0].split())[-160:]})" if failures else "")
    system = openmm.System()
    system.addParticle(1.0)
    try:
        openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    except Exception as exc:  # noqa: BLE001 - no device, no driver, wrong index
        return " ".join(str(exc).split())[:200]
    return ""
