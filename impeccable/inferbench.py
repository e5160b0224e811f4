"""The campaign's surrogate-inference stage on its own, measured: molecules/s, CPU, peak memory, store size.

It runs the real :class:`~impeccable.campaign.CampaignRunner` (library
streaming, featurisation, MLP, store writes, streaming selection) on a run
directory prepared so that the campaign starts at inference: the seed sample is
marked docked and round 0's model is given. Re-docking nominees are recorded
but not docked, and there is no MD: what is timed is inference alone.

    impeccable bench-inference --library data/library/moses_full.csv.gz --run-dir runs/bench-full

``--repeat-library N`` first writes a library of N rows (the source's SMILES
repeated with new ids) to measure how time and memory grow with size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .procwatch import TreeWatch
from .runtime.bench import cpu_seconds
from .stages.library import LibraryRecord, read_library, write_library
from .stagetasks import DockBatch, Docking, StageTasks
from .store import DockRow, Store

ROOT = Path(__file__).resolve().parent.parent
SCORES = ROOT / "data" / "scores" / "4jsv_vina_sample.csv"
RECEPTOR = ROOT / "data" / "receptors" / "4jsv"
SEEDS = 8


class NoDocking(Docking):
    """Re-docking nominees are selected and stored but not docked: the benchmark times inference alone."""

    def task(self, batch: DockBatch) -> Any:
        from .runtime import function_task

        tags = self.ctx.tags(batch.task_stage, batch.round)
        return function_task("builtins:len", batch.records, name=f"no-dock {batch.key}", tags=tags)

    def rows(self, batch: DockBatch, complete: bool = True) -> list[DockRow]:
        return []


def inference_only(campaign: Any, run_dir: Path) -> StageTasks:
    """The real stages but docking, which selects and stores its nominees and docks none."""
    stages = StageTasks(campaign, run_dir)
    stages.docking = NoDocking(stages.ctx)
    return stages


def repeat_library(source: Path, n: int, out: Path) -> Path:
    """``n`` rows: the source's SMILES over and over, each row with its own id (``R<row>-<source id>``)."""
    records = list(read_library(source))
    cycle = itertools.islice(itertools.cycle(records), n)
    write_library((LibraryRecord(f"R{i:09d}-{rec.id}", rec.smiles) for i, rec in enumerate(cycle)), out)
    return out


def train_model(out: Path, epochs: int = 5) -> Path:
    """A surrogate trained on the shipped Vina scores (the benchmark needs a model, not a good one), in a
    process of its own so that training's memory does not count as the manager's."""
    if not out.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "impeccable.stages.surrogate",
                "train",
                "--scores",
                str(SCORES),
                "--model",
                str(out),
                "--epochs",
                str(epochs),
                "--threads",
                "1",
            ],
            check=True,
        )
    return out


def bench_inference(
    library: Path,
    run_dir: Path,
    *,
    model: Path | None = None,
    cores: int = 2,
    batch_size: int = 10_000,
    top_k: int = 300,
    interval_s: float = 0.25,
) -> dict[str, Any]:
    """Run the inference stage over ``library`` into a new ``run_dir``; returns the measurements."""
    from .campaign import CampaignRunner
    from .config import Campaign

    run_dir = run_dir.resolve()
    if (run_dir / "campaign.db").exists():
        raise SystemExit(f"{run_dir}: already holds a campaign.db; give a new --run-dir")
    model = train_model(model or run_dir.parent / "inferbench-model.pt")
    campaign = Campaign.model_validate(
        {
            "campaign": {"name": "inferbench", "seed": 1},
            "receptor": {"path": RECEPTOR},
            "library": {"path": library.resolve()},
            "dock": {"seed_sample": SEEDS},
            "infer": {"batch_size": batch_size},
            "redock": {"top_k": top_k},
            "md": {"top_m": 0},
            "hits": {"check_poses": 0},
            "pilot": {"cores": cores, "oversubscribe": True, "routes": {"executable": "local", "function": "local"}},
        }
    )
    _start_at_inference(run_dir, library, model)
    runner = CampaignRunner(campaign, run_dir, stages=inference_only(campaign, run_dir))
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    with TreeWatch(interval_s=interval_s) as watch:
        runner.run()
    wall, manager_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    store = Store.open_existing(run_dir, readonly=True)
    try:
        infer = [row for row in store.task_rows() if row["stage"] == "infer" and row["finished"]]
        n, scored, filtered, failed = store.inference_counts(0)
    finally:
        store.close()
    span = max(r["finished"] for r in infer) - min(r["submitted"] for r in infer)
    compounds = scored + filtered + failed
    memory = watch.summary()
    return {
        "library": str(library),
        "compounds": compounds,
        "scored": scored,
        "batches": n,
        "cores": cores,
        "batch_size": batch_size,
        "inference_span_s": round(span, 2),
        "mol_per_s": round(compounds / span),
        "run_wall_s": round(wall, 2),
        "manager_cpu_s": round(manager_cpu, 2),
        "worker_cpu_s": memory.get("worker_cpu_s"),
        "manager_peak_rss_mib": round(_peak_rss_self() / 2**20, 1),
        "worker_peak_rss_mib": memory.get("worker_peak_rss_mib"),
        "store_mb": round(sum(p.stat().st_size for p in run_dir.glob("campaign.db*")) / 1e6, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def profile_steps(
    library: Path, model: Path, n: int = 20_000, batch_size: int = 10_000, repeat: int = 3
) -> dict[str, float]:
    """CPU microseconds per molecule of each step of inference, on one core (median of ``repeat`` passes).

    Each step runs alone over the same ``n`` molecules, so their sum is the CPU one molecule costs end to
    end, and ``2e6 / sum`` the most molecules/s two cores can give, whatever the scheduling.
    """
    import pickle
    import statistics
    import tempfile

    import numpy as np
    from rdkit import Chem

    from .stages.features import featurise_sparse
    from .stages.surrogate import _csr_tensors, _forward_sparse, _load, _torch, nominate_batch

    torch = _torch()
    torch.set_num_threads(1)
    net, meta = _load(model)
    records = list(itertools.islice(read_library(library), n))
    ids, smiles = [r.id for r in records], [r.smiles for r in records]
    chunks = [slice(i, i + batch_size) for i in range(0, len(records), batch_size)]
    mols = [Chem.MolFromSmiles(s, sanitize=False) for s in smiles]
    features = [featurise_sparse(smiles[c], meta["features"]) for c in chunks]
    scores = [np.full(len(ids[c]), -7.0, dtype=np.float32) for c in chunks]

    def read() -> None:
        for _ in itertools.islice(read_library(library), n):
            pass

    def prepare() -> None:
        for mol in mols:
            mol.UpdatePropertyCache(strict=True)
            Chem.FastFindRings(mol)

    def mlp() -> None:
        with torch.inference_mode():
            for f in features:
                _forward_sparse(torch, net, *_csr_tensors(torch, f)).numpy()

    def transport() -> None:  # the task's SMILES out and the scores back, through pickle, as the pool does
        for c, sc in zip(chunks, scores):
            pickle.loads(pickle.dumps(smiles[c], protocol=pickle.HIGHEST_PROTOCOL))
            pickle.loads(pickle.dumps({"scores": sc, "filtered": [], "failed": []}, protocol=pickle.HIGHEST_PROTOCOL))

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "campaign.db")

        def store_and_select() -> None:
            for b, (c, sc) in enumerate(zip(chunks, scores)):
                picked = nominate_batch(ids[c], sc, set(), 2)
                store.add_predictions(
                    0,
                    b,
                    ids[c],
                    sc,
                    (len(sc), len(sc), 0, 0),
                    [],
                    [(ids[c][i], smiles[c][i], float(sc[i])) for i in picked],
                )

        steps = {
            "library read (manager)": read,
            "SMILES parse": lambda: [Chem.MolFromSmiles(s, sanitize=False) for s in smiles],
            "valences + rings": prepare,
            "featurise (parse + valences + rings + Morgan counts + CSR)": lambda: [
                featurise_sparse(smiles[c], meta["features"]) for c in chunks
            ],
            "MLP (sparse first layer)": mlp,
            "pickle both ways (manager + worker)": transport,
            "store + selection (manager)": store_and_select,
        }
        cost = {
            name: statistics.median(_cpu_of(step) for _ in range(repeat)) * 1e6 / len(records)
            for name, step in steps.items()
        }
        store.close()
    out = {name: round(us, 2) for name, us in cost.items()}
    total = sum(us for name, us in cost.items() if name not in ("SMILES parse", "valences + rings"))
    out["Morgan counts + CSR (featurise - parse - valences/rings)"] = round(
        cost["featurise (parse + valences + rings + Morgan counts + CSR)"]
        - cost["SMILES parse"]
        - cost["valences + rings"],
        2,
    )
    out["total per molecule"] = round(total, 2)
    out["ceiling on 2 cores (mol/s)"] = round(2e6 / total)
    return out


def _cpu_of(step: Any) -> float:
    start = cpu_seconds()
    step()
    return cpu_seconds() - start


def _start_at_inference(run_dir: Path, library: Path, model: Path) -> None:
    """The seed sample (the library's first rows) marked docked without a score, and round 0's model."""
    seeds = list(itertools.islice(read_library(library), SEEDS))
    store = Store(run_dir / "campaign.db")
    try:
        store.select_compounds(0, "seed", seeds)
        store.add_docking(
            [DockRow(rec.id, rec.smiles, 0, "seed", None, None, "benchmark: not docked") for rec in seeds], "inferbench"
        )
        store.add_model(0, str(model.resolve()), {"note": "inferbench"})
    finally:
        store.close()


def _peak_rss_self() -> int:
    """This process's peak resident memory, from ``VmHWM`` (its own address space's high-water mark).
    ``ru_maxrss`` is not: Linux carries it over from the parent across fork and exec, so a bench started by a
    large process (a test runner that had simulated a big campaign) reported the parent's 3.3 GB as its own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run(a: argparse.Namespace) -> int:
    """``impeccable bench-inference``: print the figures as JSON."""
    if a.cores < 1 or a.batch_size < 1 or a.top_k < 0:
        raise ValueError("--cores and --batch-size must be at least 1, --top-k at least 0")
    if not a.library.is_file():
        raise FileNotFoundError(
            f"{a.library}: library not found (the full MOSES set: python data/prepare_data.py --only library-full)"
        )
    if a.steps:
        model = train_model(a.model or a.run_dir / "inferbench-model.pt")
        print(json.dumps(profile_steps(a.library, model, a.steps), indent=1))
        return 0
    library = a.library
    if a.repeat_library:
        a.run_dir.mkdir(parents=True, exist_ok=True)
        library = repeat_library(a.library, a.repeat_library, a.run_dir / f"library_{a.repeat_library}.csv.gz")
    result = bench_inference(library, a.run_dir, model=a.model, cores=a.cores, batch_size=a.batch_size, top_k=a.top_k)
    print(json.dumps(result, indent=1))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``impeccable bench-inference`` (and of ``python -m impeccable.inferbench``)."""
    p.add_argument("--library", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True, help="a new folder (the model is trained beside it)")
    p.add_argument("--model", type=Path, help="a surrogate model file (default: trained on the shipped scores)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--top-k", type=int, default=300)
    p.add_argument("--repeat-library", type=int, metavar="N", help="first write N rows repeating the library")
    steps = "instead: CPU per molecule of each step, on N molecules in this process (one core)"
    p.add_argument("--steps", type=int, metavar="N", help=steps)


def main(argv: list[str] | None = None) -> int:
    """``python -m impeccable.inferbench ...`` is ``impeccable bench-inference ...``."""
    parser = argparse.ArgumentParser(prog="python -m impeccable.inferbench")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
