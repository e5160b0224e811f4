"""The GPUs this process may use, where that was learned, and how a task is told which of them it holds.

Discovery (:func:`discover`) asks, in order, and the first that answers wins:

1. a visible-devices variable this process was started with (``CUDA_VISIBLE_DEVICES``,
   ``ROCR_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``): a restriction someone already made;
2. Flux's resource set, inside a Flux instance (the ``gpu`` children of R for this broker's rank);
3. Slurm, inside a job (``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``, ``SLURM_GPUS_ON_NODE``, the GRES
   string): a job that asked for no GPU holds none, whatever the node has;
4. the hardware: NVML (``nvidia-ml-py``), then ``nvidia-smi -L``, then ``rocm-smi``.

Everything is per node (this node); 0 where nothing answers. ``checked`` says what each
source said, so "0 GPUs" always comes with the reason.

How a task learns its GPUs. The pilot numbers GPU *slots* per node; with ``gpu_shares = k`` each
device is k slots, so a task asking for 1/k of a GPU takes one slot and k such tasks share the
device. Every route tells a task the same thing, in two variables:

- executables (local, Flux, srun): ``CUDA_VISIBLE_DEVICES`` (and ``HIP_VISIBLE_DEVICES``) name the
  *devices* it holds, "-1" for none, and ``IMPECCABLE_GPUS=ids``; under srun, Slurm's own binding
  (``--gpus-per-task``) sets the devices;
- function calls in persistent workers (local pool, Dragon): the pool sets ``CUDA_VISIBLE_DEVICES``
  to the *slot* indices on the node per call, and the worker was started with
  ``IMPECCABLE_GPUS=slots:D0,D1,...`` (the device of each slot), so that a worker keeping a model
  resident can reach whichever device a later call holds;
- ``IMPECCABLE_GPUS=none``: the pilot holds no GPU; the task must not use one.

:func:`bind` reads them back in the task: the device IDs it holds and their ordinals in this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GPUS_ENV = "IMPECCABLE_GPUS"
VISIBLE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
PROBE_TIMEOUT_S = 10.0

Runner = Callable[[Sequence[str]], "str | None"]  # argv -> stdout, or None when the program is absent or fails


@dataclass(frozen=True)
class GpuInventory:
    """The GPUs of this node that this process may use."""

    count: int
    ids: tuple[str, ...]  # what a child puts in CUDA_VISIBLE_DEVICES to reach each one
    source: str  # where the count came from, e.g. "nvidia-smi -L" or "CUDA_VISIBLE_DEVICES=0,1"
    vendor: str = ""  # "nvidia", "amd" or "" (not known)
    names: tuple[str, ...] = ()
    checked: tuple[str, ...] = field(default_factory=tuple)  # every source asked, and what it said

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discover(
    env: Mapping[str, str] | None = None, run: Runner | None = None, hostname: str | None = None
) -> GpuInventory:
    """This node's GPUs, from the first source that answers (see the module docstring)."""
    env = os.environ if env is None else env
    run = run or _run
    checked: list[str] = []
    for probe in (_from_visible, _from_flux, _from_slurm, _from_nvml, _from_nvidia_smi, _from_rocm_smi):
        found = probe(env, run, checked, hostname or socket.gethostname())
        if found is not None:
            return GpuInventory(found.count, found.ids, found.source, found.vendor, found.names, tuple(checked))
    return GpuInventory(0, (), "none found", checked=tuple(checked))


# ----------------------------------------------------------------------------- parsers (pure)


def parse_visible(value: str) -> tuple[str, ...]:
    """The entries of a visible-devices value; "", "-1" and "NoDevFiles" mean none."""
    entries = tuple(v.strip() for v in value.split(",") if v.strip())
    if not entries or entries[0] in ("-1", "NoDevFiles"):
        return ()
    return entries


def parse_nvidia_smi(text: str) -> list[tuple[str, str]]:
    """(index, name) per ``GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)`` line of ``nvidia-smi -L``."""
    return [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^GPU (\d+): (.+?)(?: \(UUID.*)?$", text, re.M)]


def parse_rocm_smi(text: str) -> list[tuple[str, str]]:
    """(index, name) per ``cardN,...`` row of ``rocm-smi --showproductname --csv``."""
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    header = rows[0] if rows and rows[0][0].strip().lower() == "device" else []
    name_at = next((i for i, h in enumerate(header) if "series" in h.lower()), None)
    out = []
    for row in rows:
        found = re.fullmatch(r"card(\d+)", row[0].strip())
        if found:
            out.append((found.group(1), row[name_at].strip() if name_at is not None and name_at < len(row) else ""))
    return out


def parse_slurm(env: Mapping[str, str]) -> tuple[tuple[str, ...], str] | None:
    """(device IDs on this node, source) from a Slurm job's variables; None outside a job."""
    if not env.get("SLURM_JOB_ID"):
        return None
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if env.get(name):
            return parse_visible(env[name]), f"{name}={env[name]}"
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        n = int(env["SLURM_GPUS_ON_NODE"])
        return tuple(str(i) for i in range(n)), f"SLURM_GPUS_ON_NODE={n}"
    for name in ("SLURM_GPUS_PER_NODE", "SLURM_JOB_GRES"):
        count = _gres_gpus(env.get(name, ""))
        if count is not None:
            return tuple(str(i) for i in range(count)), f"{name}={env[name]}"
    return (), f"Slurm job {env['SLURM_JOB_ID']} asked for no GPU (no SLURM_JOB_GPUS, SLURM_GPUS_ON_NODE or GPU GRES)"


def parse_flux_r(r_doc: Mapping[str, Any]) -> dict[int, tuple[str, ...]]:
    """Broker rank -> the GPU ids of that rank in a Flux R document (``execution.R_lite``)."""
    out: dict[int, tuple[str, ...]] = {}
    for entry in r_doc.get("execution", {}).get("R_lite", []):
        gpus = tuple(str(g) for g in expand_idset(entry.get("children", {}).get("gpu", "")))
        for rank in expand_idset(str(entry.get("rank", ""))):
            out[rank] = gpus
    return out


def expand_idset(text: str) -> list[int]:
    """Flux/Slurm id sets: ``"0-3,6"`` -> [0, 1, 2, 3, 6]."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def _gres_gpus(gres: str) -> int | None:
    """GPUs in a GRES or gpus-per-node string: ``gpu:4``, ``gpu:a100:4(IDX:0-3)``, ``4``."""
    for item in gres.split(","):
        item = item.split("(")[0].strip()
        if item.isdigit():
            return int(item)
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            return int(parts[-1])
    return None


# ----------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class _Found:
    count: int
    ids: tuple[str, ...]
    source: str
    vendor: str = ""
    names: tuple[str, ...] = ()


def _from_visible(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    for name in VISIBLE_VARIABLES:
        if name in env:
            entries = parse_visible(env[name])
            # ROCR_VISIBLE_DEVICES renumbers what HIP sees, and children inherit it: they count from 0
            ids = tuple(str(i) for i in range(len(entries))) if name == "ROCR_VISIBLE_DEVICES" else entries
            vendor = "nvidia" if name.startswith("CUDA") else "amd"
            return _Found(len(ids), ids, f"{name}={env[name]}", vendor)
    checked.append(f"{', '.join(VISIBLE_VARIABLES)}: not set")
    return None


def _from_flux(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    if not env.get("FLUX_URI"):
        checked.append("Flux: not inside a Flux instance (FLUX_URI unset)")
        return None
    text, rank = run(["flux", "resource", "R"]), run(["flux", "getattr", "rank"])
    try:
        by_rank = parse_flux_r(json.loads(text or ""))
        ids = by_rank[int((rank or "").strip())]
    except (ValueError, KeyError) as exc:
        checked.append(f"Flux: `flux resource R` / `flux getattr rank` gave no usable answer ({exc})")
        return None
    return _Found(len(ids), ids, f"Flux R, rank {rank.strip()}: gpu {','.join(ids) or 'none'}")  # type: ignore[union-attr]


def _from_slurm(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    found = parse_slurm(env)
    if found is None:
        checked.append("Slurm: not inside a job (SLURM_JOB_ID unset)")
        return None
    ids, source = found
    return _Found(len(ids), ids, source)


def _from_nvml(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    try:
        import pynvml  # nvidia-ml-py (the `gpu` extra)
    except ImportError:
        checked.append("NVML: nvidia-ml-py not installed")
        return None
    try:
        pynvml.nvmlInit()
        try:
            n = pynvml.nvmlDeviceGetCount()
            names = tuple(_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(n))
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and friends: no driver here
        checked.append(f"NVML: {type(exc).__name__}: {exc}")
        return None
    if not n:
        checked.append("NVML: 0 devices")
        return None
    return _Found(n, tuple(str(i) for i in range(n)), "NVML", "nvidia", names)


def _from_nvidia_smi(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    found = parse_nvidia_smi(run(["nvidia-smi", "-L"]) or "")
    if not found:
        checked.append("nvidia-smi -L: not found, failed, or listed no GPU")
        return None
    return _Found(len(found), tuple(i for i, _ in found), "nvidia-smi -L", "nvidia", tuple(n for _, n in found))


def _from_rocm_smi(env: Mapping[str, str], run: Runner, checked: list[str], host: str) -> _Found | None:
    found = parse_rocm_smi(run(["rocm-smi", "--showproductname", "--csv"]) or "")
    if not found:
        checked.append("rocm-smi --showproductname --csv: not found, failed, or listed no GPU")
        return None
    return _Found(len(found), tuple(i for i, _ in found), "rocm-smi", "amd", tuple(n for _, n in found))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _run(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# ----------------------------------------------------------------------------- what a task is told


def slot_devices(gpus_per_node: int, gpu_shares: int, device_ids: Sequence[str] = ()) -> tuple[str, ...]:
    """The device of each GPU slot of a node: ``gpu_shares`` consecutive slots per device."""
    if not gpus_per_node:
        return ()
    devices = tuple(device_ids) or tuple(str(i) for i in range(gpus_per_node // gpu_shares))
    return tuple(devices[i // gpu_shares] for i in range(gpus_per_node))


def launch_env(gpu_slots: Sequence[int], gpus_per_node: int, table: Sequence[str]) -> dict[str, str]:
    """What an executable holding these GPU slots is started with (see the module docstring)."""
    if not gpus_per_node:
        return {GPUS_ENV: "none"}
    table = table or slot_devices(gpus_per_node, 1)  # none given: each slot its own device, numbered on the node
    devices = list(dict.fromkeys(table[g % gpus_per_node] for g in gpu_slots)) or ["-1"]
    visible = ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": visible, "HIP_VISIBLE_DEVICES": visible, GPUS_ENV: "ids"}


def worker_env(gpus_per_node: int, table: Sequence[str]) -> dict[str, str]:
    """What a persistent function worker is started with: the device of each slot, or none."""
    return {GPUS_ENV: f"slots:{','.join(table)}" if gpus_per_node else "none"}


@dataclass(frozen=True)
class Binding:
    """The GPUs a task holds: device IDs, their ordinals in this process, and why there are none."""

    devices: tuple[str, ...]
    ordinals: tuple[int, ...]
    reason: str = ""  # set when there are none


def bind(env: Mapping[str, str] | None = None, prepare: bool = True) -> Binding:
    """Read this task's GPUs back (see the module docstring).

    In a persistent worker (``slots:``) with ``prepare`` (call it before CUDA is initialised in this
    process), ``CUDA_VISIBLE_DEVICES`` is widened to every device of the node, so that the process can
    reach whichever device a later call holds; the ordinal is then the device's place on the node.
    """
    environ = os.environ if env is None else env
    mode = environ.get(GPUS_ENV)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if mode == "none":
        return Binding((), (), "the pilot's allocation has no GPU")
    if mode is not None and mode.startswith("slots:"):
        table = mode[len("slots:") :].split(",")
        try:
            devices = tuple(dict.fromkeys(table[int(s)] for s in parse_visible(visible or "")))
        except (ValueError, IndexError):
            return Binding((), (), f"CUDA_VISIBLE_DEVICES={visible!r} names no GPU slot of this node")
        if not devices:
            return Binding((), (), "this task was given no GPU")
        node = list(dict.fromkeys(table))
        if prepare and isinstance(environ, os._Environ):
            os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["HIP_VISIBLE_DEVICES"] = ",".join(node)
        return Binding(devices, tuple(node.index(d) for d in devices))
    if visible is None:  # not started by the pilot: whatever the user made visible, or every device
        return Binding(("0",), (0,))
    devices = parse_visible(visible)
    if not devices:
        return Binding((), (), "this task was given no GPU" if mode == "ids" else f"CUDA_VISIBLE_DEVICES={visible}")
    return Binding(devices, tuple(range(len(devices))))


def node_table(allocation: Any) -> tuple[str, ...]:
    """:func:`slot_devices` of an :class:`~.resources.Allocation` (the device of each GPU slot on a node)."""
    return slot_devices(allocation.gpus_per_node, allocation.gpu_shares, allocation.gpu_devices)
