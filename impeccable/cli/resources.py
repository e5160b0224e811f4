"""``impeccable resources``: what a pilot started here would hold (cores and GPUs per node) and where each number
came from, so that "0 GPUs" always comes with what was checked."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from ..fileio import write_json

RESOURCES_HELP = "the cores and GPUs a pilot would hold here, and where each number came from"
RESOURCES_DESCRIPTION = (
    "Prints this node's cores and GPUs as a pilot with pilot.cores and pilot.gpus left "
    "to their defaults would find them: the Slurm job's CPUs or this process's affinity mask; "
    "GPUs from CUDA_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES, Flux's R, "
    "Slurm's variables, NVML, nvidia-smi or rocm-smi, the first that answers."
)


def register(sub: Any) -> None:
    p = sub.add_parser("resources", help=RESOURCES_HELP, description=RESOURCES_DESCRIPTION)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    p.set_defaults(handler=_resources)


def resources_here() -> dict[str, Any]:
    """This node's cores and GPUs, each with its source (plain data, for the JSON)."""
    from ..runtime.gpus import discover
    from ..runtime.resources import cores_source, machine_cores

    found = discover()
    node = {
        "name": socket.gethostname(),
        "cores": machine_cores(),
        "cores_source": cores_source(),
        "gpus": found.count,
        "gpu_ids": list(found.ids),
        "gpu_names": list(found.names),
        "gpu_vendor": found.vendor,
        "gpus_source": found.source,
        "gpus_checked": list(found.checked),
    }
    return {
        "nodes": [node],
        "cores": node["cores"],
        "gpus": node["gpus"],
        "note": "this node only; a pilot over several nodes gives each the same number (pilot.nodes)",
    }


def _resources(args: argparse.Namespace) -> int:
    result = resources_here()
    for node in result["nodes"]:
        print(f"node {node['name']}: {node['cores']} cores ({node['cores_source']})")
        names = f" ({', '.join(node['gpu_names'])})" if node["gpu_names"] else ""
        ids = f", ids {','.join(node['gpu_ids'])}" if node["gpu_ids"] else ""
        print(f"  {node['gpus']} GPU(s){names}{ids}: {node['gpus_source']}")
        for line in node["gpus_checked"]:
            print(f"    checked: {line}")
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0
