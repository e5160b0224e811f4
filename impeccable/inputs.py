"""What a campaign checks before any task runs: its inputs, its run directory's settings, its allocation.

Errors here name the file and the key and start nothing, so a user fixes the
input and runs the same command again; a run directory that holds no results
yet takes the new settings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import Campaign
from .gpuplan import requests, shares_per_device
from .runtime import Allocation, Pilot
from .runtime.nodes import discover as discover_nodes
from .runtime.resources import machine_cores
from .stages.library import LibraryScan
from .store import Store


class CampaignInputError(ValueError):
    """The campaign's inputs cannot be used (library, receptor, run directory); the message names which."""


def validate_inputs(campaign: Campaign, store: Store) -> LibraryScan:
    """Read the receptor and the whole library, so that their errors are reported at once, naming the file,
    rather than as failed tasks (or not at all). Rows skipped for an empty id or SMILES are stored with
    their reason. Returns the library's scan (record count). A resumed run whose library file is unchanged
    (path, size, modification time) reuses the stored scan instead of reading a million rows again."""
    from .library_stage import campaign_sources
    from .stages.errors import StageInputError
    from .stages.library_sources import scan_sources
    from .stages.medfilters import compile_rules
    from .stages.receptor import load_receptor

    source = campaign.source or "campaign"
    try:
        load_receptor(campaign.receptor.path, site_file=campaign.receptor.site)
    except StageInputError as exc:
        raise CampaignInputError(f"{source}: receptor: {exc}") from None
    lib = campaign.library
    try:
        compile_rules(lib.filters.model_dump(mode="json"))  # a bad SMARTS is an input error, not a failed task
        sources, prefix = campaign_sources(campaign)
    except StageInputError as exc:
        raise CampaignInputError(
            f"{source}: library.{exc}" if str(exc).startswith("filters.") else f"{source}: library: {exc}"
        ) from None
    signature = _library_signature(campaign, sources)
    cached = json.loads(store.get_meta("library_scan") or "{}")
    if cached.get("signature") == signature:  # the same file, unchanged since it was scanned: no second pass
        scan = LibraryScan(
            count=cached["count"],
            skipped=[tuple(cached["first_skip"])] if cached["first_skip"] else [],
            skipped_count=cached["skipped_count"],
        )
    else:
        try:
            scan = scan_sources(sources, prefix=prefix, limit=lib.limit)
        except StageInputError as exc:
            raise CampaignInputError(f"{source}: library: {exc}") from None
        store.add_failures("library", [(cid or f"line {line}", reason) for line, cid, reason in scan.skipped])
        store.set_meta(
            "library_scan",
            json.dumps(
                {
                    "signature": signature,
                    "count": scan.count,
                    "skipped_count": scan.skipped_count,
                    "first_skip": scan.skipped[0] if scan.skipped else None,
                }
            ),
        )
    if scan.skipped_count:
        print(
            f"warning: {scan.skipped_count} library row(s) skipped (first: {scan.skipped[0][2]}); "
            "`impeccable status` lists them",
            file=sys.stderr,
        )
    return scan


def size_warnings(campaign: Campaign, count: int) -> list[str]:
    """Settings that ask for more compounds than the library holds, with the numbers: the run still goes
    (it docks what there is), but a user who meant another library or another setting sees it at once."""
    seed, top_k, top_m, rounds = (
        campaign.dock.seed_sample,
        campaign.redock.top_k,
        campaign.md.top_m,
        campaign.campaign.rounds,
    )
    source, out = campaign.library.describe(), []
    if seed > count:
        out.append(f"dock.seed_sample = {seed} but {source} has {count} compounds: the seed sample is all of them")
    left = count - min(seed, count)
    if top_k > left:
        out.append(
            f"redock.top_k = {top_k} but {left} compounds of {source} are left after the seed sample "
            f"({count} - {min(seed, count)}): re-docking takes all of them"
        )
    dockable = min(count, seed + top_k * rounds)
    if top_m > dockable:
        out.append(
            f"md.top_m = {top_m} but at most {dockable} compounds are docked (seed sample {min(seed, count)}"
            f" + top_k {top_k} x {rounds} round(s), library {count}): MD runs on all of them"
        )
    return out


def _library_signature(campaign: Campaign, sources: list[Any]) -> dict[str, object]:
    """What identifies one scan of the library: its files (path, size, modification time) and how they are read."""
    lib = campaign.library
    files = [
        [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns, s.name, s.id_column, s.smiles_column]
        for s in sources
        for path in s.paths
    ]
    return {"files": files, "limit": lib.limit, "named_sources": bool(lib.sources)}


# how tasks run, not what they compute: free to change between sessions (a resumed run may find other GPUs)
RESOURCE_KEYS = {"surrogate": {"gpus"}, "infer": {"gpus"}, "md": {"gpus", "platform", "precision"}}


def check_same_campaign(campaign: Campaign, store: Store, run_dir: Path) -> None:
    """A run directory belongs to one campaign: settings that change results must not change on resume.

    Called once the inputs have validated; a directory that holds no results yet takes the new settings.
    """
    sections = campaign.model_dump(mode="json", exclude={"pilot": True, "source": True, "hits": True, **RESOURCE_KEYS})
    fingerprint = json.dumps(sections, sort_keys=True)
    previous = store.get_meta("campaign")
    if previous is None or (previous != fingerprint and not store.has_results()):
        store.set_meta("campaign", fingerprint)
        store.set_meta("name", campaign.name)
    elif previous != fingerprint:
        old, new = json.loads(previous), json.loads(fingerprint)
        changed = sorted(
            f"{s}.{k}" for s in new for k in set(old.get(s, {})) | set(new[s]) if old.get(s, {}).get(k) != new[s].get(k)
        )
        raise CampaignInputError(
            f"{run_dir}: this run directory holds campaign results made with other settings "
            f"({', '.join(changed) or 'changed sections'}); use a new --run-dir or restore the settings"
        )
    store.set_meta("hits", campaign.hits.model_dump_json())  # presentation only: the newest settings win


def make_pilot(campaign: Campaign) -> Pilot:
    """The pilot of ``[pilot]``: its cores (never more than the machine's unless oversubscribe), nodes, routes."""
    p = campaign.pilot
    allocation = make_allocation(campaign)
    from .work import PRELOAD, PRELOAD_FORKED

    # function workers start with the stage modules imported (torch, RDKit), unless the campaign says otherwise
    preload = {"local": [*PRELOAD_FORKED, *PRELOAD], "dragon": list(PRELOAD)}
    options = {name: {"preload": preload[name], **p.options.get(name, {})} for name in ("local", "dragon")}
    options.update({name: dict(value) for name, value in p.options.items() if name not in options})
    return Pilot(allocation, routes=dict(p.routes), shares=p.shares or None, options=options, exclusive=p.exclusive)


def make_allocation(campaign: Campaign) -> Allocation:
    """``pilot.nodes`` > 1 inside a Slurm job or Flux instance of that many nodes or more: its first ``nodes``
    real nodes, found in the job's environment (default cores: all the job gives on them); elsewhere that many
    nodes emulated on this machine. GPUs: :func:`pilot_gpus`, in slots of ``gpu_shares`` per device."""
    p = campaign.pilot
    source = campaign.source or "campaign"
    try:
        found = discover_nodes() if p.nodes > 1 else None
        job = Allocation.on_nodes(found, p.nodes, p.cores) if found is not None and len(found.names) > 1 else None
    except ValueError as exc:
        raise CampaignInputError(f"{source}: pilot: {exc}") from None
    cores = job.cores if job is not None else p.cores or Allocation.detect().cores
    available = machine_cores()
    if job is None and cores > available and not p.oversubscribe:
        raise CampaignInputError(
            f"{source}: pilot.cores = {cores} but this machine (or Slurm job) has {available}: {cores} tasks "
            f"would share {available} cores. Set pilot.cores to the allocation, or pilot.oversubscribe = true "
            "(--oversubscribe) to advertise more, e.g. for an emulation"
        )
    devices, ids = pilot_gpus(campaign, hosts=p.nodes if job is not None else 1)
    cores_per_node, devices_per_node = cores // p.nodes, devices // p.nodes
    shares = shares_per_device(requests(campaign, cores_per_node, devices_per_node)) if devices else 1
    # device IDs only where all nodes are this machine's one: another host's IDs (UUIDs) are not these
    names = ids if len(ids) == devices_per_node and p.nodes == 1 else ()
    try:
        if job is not None:
            return replace(job, gpus=devices * shares, gpu_shares=shares)
        return Allocation.emulated(cores, nodes=p.nodes, gpus=devices * shares, gpu_shares=shares, gpu_devices=names)
    except ValueError as exc:
        raise CampaignInputError(f"{source}: pilot: {exc}") from None


def pilot_gpus(campaign: Campaign, hosts: int = 1) -> tuple[int, tuple[str, ...]]:
    """The GPUs of ``[pilot]`` (all nodes) and this node's device IDs: ``auto`` finds them here; an explicit
    count above what is here is refused unless the campaign oversubscribes (an emulation). ``hosts``: the
    real nodes the allocation spans, each taken to have the GPUs found here (a job's nodes are alike)."""
    from .runtime.gpus import discover

    p = campaign.pilot
    found = discover()
    here = found.count * hosts
    if p.gpus == "auto":
        return here, found.ids
    if p.gpus > here and not p.oversubscribe:
        raise CampaignInputError(
            f"{campaign.source or 'campaign'}: pilot.gpus = {p.gpus} but {here} GPU(s) are here "
            f'({found.source}; `impeccable resources` says what was checked). Set pilot.gpus = "auto", or '
            "pilot.oversubscribe = true to advertise GPUs that are not here (an emulation)"
        )
    return p.gpus, found.ids
