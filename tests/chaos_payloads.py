"""The chaos test's payloads: each stage's task, fast and deterministic, leaving its outputs as the real one does.

Docking writes one rank-file line per compound as the real stage does (:class:`RankLines`); the MD steps write
their step files with the fingerprint the campaign checks; training writes a model file whose content is a hash
of the scores it was given, and inference scores from that hash, so a model trained on other data predicts
other numbers. Every payload logs ``start KIND KEY`` when it begins a unit of work and ``done KIND KEY`` when
the unit's result is on disk (executables) or returned (functions), one ``O_APPEND`` write per line, so the test
can tell finished work from work that was running when the campaign was killed.

Imports are light (no RDKit, no torch): a task process starts in a few tens of milliseconds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DOCK_S = 0.12  # per compound
TRAIN_S = 0.4
INFER_S = 0.3
MD_STEP_S = 0.3
COMBINE_S = 0.2


def log(path: str, event: str, kind: str, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {kind} {key}\n".encode())
    finally:
        os.close(fd)


def value(*parts: str) -> float:
    """A deterministic number in [-12, -4) for these strings."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return round(-12.0 + 8.0 * (int.from_bytes(digest, "little") % 10_000) / 10_000, 3)


# ---------------------------------------------------------------- executables


def dock(ligands: Path, out_dir: Path, log_path: str, kind: str) -> int:
    from impeccable.stages.rankfiles import RankLines, rank_file

    with open(ligands, newline="") as fh:
        rows = [(row["id"], row["smiles"]) for row in csv.DictReader(fh)]
    with RankLines(rank_file(out_dir, 0)) as sink:
        for cid, smiles in rows:
            log(log_path, "start", kind, cid)
            time.sleep(DOCK_S)
            if "#" in smiles:  # the library's triple-bond compounds stand in for molecules docking cannot score
                sink.write({"id": cid, "smiles": smiles, "error": "docking failed for every state (chaos payload)"})
            else:
                sink.write(
                    {
                        "id": cid,
                        "smiles": smiles,
                        "score_kcal_mol": value("dock", cid),
                        "pose_sdf": f"{cid}\n  chaos pose\n",
                        "state_smiles": smiles,
                    }
                )
            log(log_path, "done", kind, cid)
    return 0


def md_step(step: str, folder: Path, key: str, log_path: str, index: int = -1) -> int:
    from impeccable.fileio import write_json
    from impeccable.stages import md_tasks

    unit = f"{folder.name}" if step == "prepare" else f"{folder.name}:{index}"
    log(log_path, "start", f"md-{step}", unit)
    time.sleep(MD_STEP_S)
    if step == "prepare":
        write_json(folder / md_tasks.PREPARED, {"fingerprint": key})
    else:
        write_json(
            md_tasks.replica_file(folder, index),
            {"fingerprint": key, "replica": {"mean": value("replica", folder.name, str(index))}},
        )
    log(log_path, "done", f"md-{step}", unit)
    return 0


# ---------------------------------------------------------------- functions (run in the pilot's workers)


def train(scores: list[tuple[str, float]], model_path: str, log_path: str, r: int) -> dict[str, Any]:
    log(log_path, "start", "train", f"r{r}")
    time.sleep(TRAIN_S)
    digest = hashlib.sha256(json.dumps(sorted(scores)).encode()).hexdigest()
    tmp = f"{model_path}.tmp"
    Path(tmp).write_text(digest)
    os.replace(tmp, model_path)
    log(log_path, "done", "train", f"r{r}")
    return {"val_spearman": 0.0, "model": digest}


def infer(model_path: str, smiles: list[str], log_path: str, key: str) -> dict[str, Any]:
    log(log_path, "start", "infer", key)
    time.sleep(INFER_S)
    model = Path(model_path).read_text()
    scores = [float("nan") if s.startswith("Q") else value(model, s) for s in smiles]
    failed = [(i, f"unparsable SMILES {s!r}") for i, s in enumerate(smiles) if s.startswith("Q")]
    log(log_path, "done", "infer", key)
    return {"scores": scores, "filtered": [], "failed": failed}


def combine(folder: str, cid: str, log_path: str) -> dict[str, Any]:
    from impeccable.stages import md_tasks

    log(log_path, "start", "md-combine", Path(folder).name)
    time.sleep(COMBINE_S)
    meta = json.loads((Path(folder) / md_tasks.PREPARED).read_text())
    replicas = sorted(Path(folder).glob("replica_*.json"))
    means = [json.loads(p.read_text())["replica"]["mean"] for p in replicas]
    log(log_path, "done", "md-combine", Path(folder).name)
    return {
        "binding_energy_kcal_mol": value("md", cid),
        "stderr_kcal_mol": 0.1,
        "replica_means_kcal_mol": means,
        "fingerprint": meta["fingerprint"],
    }


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "dock":
        raise SystemExit(dock(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]))
    raise SystemExit(md_step(what, Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
