"""Campaign commands: ``run``, ``status``, ``report``, ``export``, ``prune`` (``compare`` lives in ``compare``)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from .errors import UserError
from .runtime.backends import BACKEND_NAMES


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or resume) a campaign file",
                       description="Runs the campaign into its run directory; run the same command again "
                       "after a crash or Ctrl-C to resume: nothing already computed runs again.")
    p.add_argument("campaign", type=Path, help="campaign TOML, e.g. campaigns/demo.toml")
    p.add_argument("--run-dir", type=Path, help="where results go (default: the file's campaign.run_dir "
                   "or runs/<name>)")
    p.add_argument("--cores", type=int, help="override pilot.cores")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow more cores than this machine has (sets pilot.oversubscribe)")
    p.add_argument("--backend", choices=("auto", *BACKEND_NAMES),
                   help="serve every task kind with this backend (overrides pilot.routes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in batch logs)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    p.set_defaults(handler=_run)

    p = sub.add_parser("status", help="progress of a run directory, per stage")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(handler=_status)

    p = sub.add_parser("report", help="write the HTML report of a run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report/index.html")
    p.set_defaults(handler=_report)

    p = sub.add_parser("export", help="write the ranked hits as CSV and SDF")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="folder (default: RUN_DIR/export)")
    p.add_argument("--top", type=int, default=None, help="only the best N")
    p.set_defaults(handler=_export)

    p = sub.add_parser("prune", help="drop per-compound predictions of rounds older than the newest",
                       description="Keeps every result a stage reads (each re-dock nominee with its SMILES and "
                       "predicted score, the inference counts) and the newest round's predictions; older rounds' "
                       "predictions go, and the file shrinks. Refused while a run uses the directory.")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(handler=_prune)

    from .benchmark import register as register_benchmark
    from .compare import register as register_compare
    from .emulate import register as register_emulate
    from .model import register as register_model

    register_benchmark(sub)
    register_compare(sub)
    register_emulate(sub)
    register_model(sub)


def load(path: Path, *, cores: int | None = None, backend: str | None = None, oversubscribe: bool = False) -> Any:
    """The campaign file with the command line's overrides (pilot.cores, every route, oversubscribe)."""
    from .config import CampaignError, load_campaign

    try:
        campaign = load_campaign(path)
    except CampaignError as exc:
        raise UserError(str(exc)) from None
    update: dict[str, Any] = {}
    if cores:
        update["cores"] = cores
    if backend:
        update["routes"] = {"executable": backend, "function": backend}
    if oversubscribe:
        update["oversubscribe"] = True
    if update:
        campaign = campaign.model_copy(update={"pilot": campaign.pilot.model_copy(update=update)})
    return campaign


def _run(args: argparse.Namespace) -> int:
    from .campaign import CampaignInputError, CampaignInterrupted, CampaignRunner
    from .lock import RunDirBusy
    from .progress import ProgressView

    campaign = load(args.campaign, cores=args.cores, backend=args.backend, oversubscribe=args.oversubscribe)
    run_dir = campaign.run_dir(args.run_dir)
    view = None if args.no_progress else ProgressView()
    runner = CampaignRunner(campaign, run_dir, progress=view)
    try:
        with view or contextlib.nullcontext():
            summary = runner.run()
    except CampaignInterrupted as exc:
        print(str(exc))
        return 130
    except (CampaignInputError, RunDirBusy) as exc:
        raise UserError(str(exc)) from None
    print(f"campaign {campaign.name} finished: results in {run_dir}/campaign.db")
    for failure in summary["failed_tasks"]:
        print(f"  failed: {failure}")
    from .results import print_top

    print_top(runner.store, 10)
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report(run_dir)}")
    return 1 if summary["failed_tasks"] else 0


def _status(args: argparse.Namespace) -> int:
    from .results import print_status

    store = _open(args.run_dir)
    try:
        print_status(store, args.run_dir)
    finally:
        store.close()
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    _open(args.run_dir).close()
    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .results import export

    store = _open(args.run_dir)
    try:
        csv_path, sdf_path, n = export(store, args.out or args.run_dir / "export", args.top)
    finally:
        store.close()
    print(f"wrote {n} ranked compounds to {csv_path} and {sdf_path}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from .lock import RunDirBusy, RunDirLock
    from .store import Store

    _open(args.run_dir).close()
    db = args.run_dir / "campaign.db"
    before = _size_mb(db)
    try:
        with RunDirLock(args.run_dir):
            store = Store(db)
            try:
                rounds = store.prune_predictions()
                store.vacuum()
            finally:
                store.close()
    except RunDirBusy as exc:
        raise UserError(str(exc)) from None
    pruned = f"predictions of round(s) {', '.join(map(str, rounds))} pruned" if rounds else "nothing to prune"
    print(f"{pruned}: {db} {before:.1f} MB -> {_size_mb(db):.1f} MB")
    return 0


def _size_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6


def _open(run_dir: Path) -> Any:
    from .store import Store

    try:
        return Store.open_existing(run_dir, readonly=True)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
