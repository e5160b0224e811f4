"""What a campaign checks before any task runs: its inputs, its run directory's settings, its allocation.

Errors here name the file and the key and start nothing, so a user fixes the
input and runs the same command again; a run directory that holds no results
yet takes the new settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import Campaign, PilotSection
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
    from .stages.errors import StageInputError
    from .stages.library import scan_library
    from .stages.receptor import load_receptor

    source = campaign.source or "campaign"
    try:
        load_receptor(campaign.receptor.path, site_file=campaign.receptor.site)
    except StageInputError as exc:
        raise CampaignInputError(f"{source}: receptor: {exc}") from None
    lib = campaign.library
    signature = _library_signature(campaign)
    cached = json.loads(store.get_meta("library_scan") or "{}")
    if cached.get("signature") == signature:  # the same file, unchanged since it was scanned: no second pass
        scan = LibraryScan(count=cached["count"], skipped=[tuple(cached["first_skip"])] if cached["first_skip"] else [],
                           skipped_count=cached["skipped_count"])
    else:
        try:
            scan = scan_library(lib.path, id_column=lib.id_column, smiles_column=lib.smiles_column, limit=lib.limit)
        except StageInputError as exc:
            raise CampaignInputError(f"{source}: library: {exc}") from None
        store.add_failures("library", [(cid or f"line {line}", reason) for line, cid, reason in scan.skipped])
        store.set_meta("library_scan", json.dumps({"signature": signature, "count": scan.count,
                                                   "skipped_count": scan.skipped_count,
                                                   "first_skip": scan.skipped[0] if scan.skipped else None}))
    if scan.skipped_count:
        print(f"warning: {scan.skipped_count} library row(s) skipped (first: {scan.skipped[0][2]}); "
              "`impeccable status` lists them", file=sys.stderr)
    return scan


def _library_signature(campaign: Campaign) -> dict[str, object]:
    """What identifies one scan of the library: the file (path, size, modification time) and how it is read."""
    lib = campaign.library
    stat = lib.path.stat()
    return {"path": str(lib.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "limit": lib.limit,
            "id_column": lib.id_column, "smiles_column": lib.smiles_column}


def check_same_campaign(campaign: Campaign, store: Store, run_dir: Path) -> None:
    """A run directory belongs to one campaign: settings that change results must not change on resume.

    Called once the inputs have validated; a directory that holds no results yet takes the new settings.
    """
    fingerprint = json.dumps(
        {k: v for k, v in campaign.model_dump(mode="json").items() if k not in ("pilot", "source", "hits")},
        sort_keys=True)
    previous = store.get_meta("campaign")
    if previous is None or (previous != fingerprint and not store.has_results()):
        store.set_meta("campaign", fingerprint)
        store.set_meta("name", campaign.name)
    elif previous != fingerprint:
        old, new = json.loads(previous), json.loads(fingerprint)
        changed = sorted(f"{s}.{k}" for s in new for k in set(old.get(s, {})) | set(new[s])
                         if old.get(s, {}).get(k) != new[s].get(k))
        raise CampaignInputError(
            f"{run_dir}: this run directory holds campaign results made with other settings "
            f"({', '.join(changed) or 'changed sections'}); use a new --run-dir or restore the settings")
    store.set_meta("hits", campaign.hits.model_dump_json())  # presentation only: the newest settings win


def make_pilot(campaign: Campaign) -> Pilot:
    """The pilot of ``[pilot]``: its cores (never more than the machine's unless oversubscribe), nodes, routes."""
    p = campaign.pilot
    allocation = make_allocation(p, str(campaign.source or "campaign"))
    from .work import PRELOAD, PRELOAD_FORKED

    # function workers start with the stage modules imported (torch, RDKit), unless the campaign says otherwise
    preload = {"local": [*PRELOAD_FORKED, *PRELOAD], "dragon": list(PRELOAD)}
    options = {name: {"preload": preload[name], **p.options.get(name, {})} for name in ("local", "dragon")}
    options.update({name: dict(value) for name, value in p.options.items() if name not in options})
    return Pilot(allocation, routes=dict(p.routes), shares=p.shares or None, options=options, exclusive=p.exclusive)


def make_allocation(p: PilotSection, source: str) -> Allocation:
    """``pilot.nodes`` > 1 inside a Slurm job or Flux instance of that many nodes or more: its first ``nodes``
    real nodes, found in the job's environment (default cores: all the job gives on them); elsewhere that many
    nodes emulated on this machine."""
    try:
        found = discover_nodes() if p.nodes > 1 else None
        if found is not None and len(found.names) > 1:
            return Allocation.on_nodes(found, p.nodes, p.cores, p.gpus)
    except ValueError as exc:
        raise CampaignInputError(f"{source}: pilot: {exc}") from None
    cores = p.cores or Allocation.detect().cores
    available = machine_cores()
    if cores > available and not p.oversubscribe:
        raise CampaignInputError(
            f"{source}: pilot.cores = {cores} but this machine (or Slurm job) has {available}: {cores} tasks "
            f"would share {available} cores. Set pilot.cores to the allocation, or pilot.oversubscribe = true "
            "(--oversubscribe) to advertise more, e.g. for an emulation")
    try:
        return Allocation.emulated(cores, nodes=p.nodes, gpus=p.gpus)
    except ValueError as exc:
        raise CampaignInputError(f"{source}: pilot: {exc}") from None
