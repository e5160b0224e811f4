"""How a campaign's stages use the allocation's GPUs: shares per device, each stage's request, and why not.

A stage asks for ``gpus`` per task in the campaign file: a whole number, or one n-th of a GPU so that n
tasks share a device (``[infer] gpus = "auto"`` is one n-th with n the cores per GPU of a node, so that
every core can run an inference batch). The pilot then splits each device into ``shares`` GPU slots
(the least common multiple of the n's) and a task holds ``request x shares`` slots (see
``runtime/gpus.py``). Where the allocation has no GPU, every stage runs on CPU and the plan's ``reason``
says why, once for the run.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from .config import Campaign

STAGES = ("train", "infer", "md")  # the stages that can use a GPU (Vina docking has no GPU code)


def requests(campaign: Campaign, cores_per_node: int, devices_per_node: int) -> dict[str, Fraction]:
    """GPUs per task of each stage that can use one, as fractions of a device."""
    infer = campaign.infer.gpus
    if infer == "auto":
        infer = 1 / max(1, math.ceil(cores_per_node / devices_per_node)) if devices_per_node else 1
    values = {"train": campaign.surrogate.gpus, "infer": infer, "md": campaign.md.gpus}
    return {stage: Fraction(value).limit_denominator(64) for stage, value in values.items()}


def shares_per_device(wanted: dict[str, Fraction]) -> int:
    """GPU slots per device: every request becomes a whole number of slots."""
    return math.lcm(*(f.denominator for f in wanted.values() if f > 0), 1)


@dataclass(frozen=True)
class GpuPlan:
    """Each stage's GPU slots per task in one allocation, and why stages that asked for GPUs got none."""

    shares: int  # GPU slots per device
    slots: dict[str, int]  # stage -> GPU slots per task
    wanted: dict[str, str]  # stage -> the request, as a fraction of a device ("1", "1/16")
    devices: int  # devices in the allocation (all nodes)
    source: str = ""  # where the GPU count came from
    reason: str = ""  # set when a stage asked for GPUs and runs on CPU
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gpus(self, stage: str) -> int:
        """GPU slots per task of ``stage`` (0 where it runs on CPU)."""
        return self.slots.get(stage, 0)


def plan_for(campaign: Campaign, allocation: Any, source: str = "") -> GpuPlan:
    """The plan in ``allocation`` (an :class:`~impeccable.runtime.Allocation`), built by :func:`inputs.make_pilot`
    with ``shares_per_device`` slots per device, or any other (a request below one slot then holds one)."""
    devices_per_node = allocation.devices_per_node
    wanted = requests(campaign, allocation.cores_per_node, devices_per_node)
    k = allocation.gpu_shares
    slots, notes = {}, []
    for stage, f in wanted.items():
        slots[stage] = max(1, math.ceil(f * k)) if f > 0 and allocation.gpus else 0
        if f > 0 and allocation.gpus and f * k != slots[stage]:
            notes.append(f"{stage}: asked for {f} of a GPU, holds {slots[stage]} of the {k} slot(s) of one")
    asked = [stage for stage, f in wanted.items() if f > 0]
    reason = ""
    if asked and not allocation.gpus:
        reason = (
            f"no GPU in this allocation ({source or 'pilot.gpus = 0'}): "
            f"{', '.join(_STAGE_NAMES[s] for s in asked)} run on CPU"
        )
    return GpuPlan(
        k,
        slots,
        {s: str(f) for s, f in wanted.items()},
        devices_per_node * len(allocation.nodes),
        source,
        reason,
        notes,
    )


_STAGE_NAMES = {"train": "surrogate training", "infer": "inference", "md": "MD"}


class DeviceLog:
    """What the tasks ran on: each stage's devices, and each fallback reason said once per run (not per task)."""

    def __init__(self, say: Any = None) -> None:
        self.say = say  # called with each new reason (print and store it)
        self.devices: dict[str, dict[str, int]] = {}
        self.reasons: list[str] = []

    def saw(self, stage: str, device: str, reason: str = "") -> None:
        count = self.devices.setdefault(stage, {})
        count[device] = count.get(device, 0) + 1
        if reason and reason not in self.reasons:
            self.reasons.append(reason)
            if self.say is not None:
                self.say(f"{_STAGE_NAMES.get(stage, stage)}: {reason}")


def gpu_source(campaign: Campaign) -> str:
    """Where the pilot's GPU count comes from, for the run's record."""
    from .runtime.gpus import discover

    if campaign.pilot.gpus != "auto":
        return f"pilot.gpus = {campaign.pilot.gpus}"
    found = discover()
    return f"{found.source}; checked: {'; '.join(found.checked)}" if found.checked else found.source


def use_gpus(campaign: Campaign, allocation: Any, stages: Any, store: Any) -> Any:
    """Give the stages (a :class:`~.stagetasks.StageTasks`) their GPUs in ``allocation``; keep the plan in the store,
    and say each reason to run on CPU once per run (printed, and kept in the store's ``device_notes``).
    Returns ``allocation``."""
    plan = plan_for(campaign, allocation, gpu_source(campaign))
    store.set_meta("gpu_plan", json.dumps(plan.to_dict()))

    def say(text: str) -> None:
        notes = json.loads(store.get_meta("device_notes") or "[]")
        if text not in notes:
            store.set_meta("device_notes", json.dumps([*notes, text]))
        print(f"note: {text}", file=sys.stderr)

    stages.use_gpus(plan, say)
    for note in ([plan.reason] if plan.reason else []) + plan.notes:
        say(note)
    return allocation
