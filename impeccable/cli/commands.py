"""Campaign commands: ``run``, ``status``, ``report``, ``export``, ``prune`` (``compare`` lives in ``compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runtime.backends import BACKEND_NAMES

RUN_HELP = "run (or resume) a campaign file"
RUN_DESCRIPTION = (
    "Runs the campaign into its run directory; run the same command again "
    "after a crash or Ctrl-C to resume: nothing already computed runs again."
)

PRUNE_HELP = "drop per-compound predictions of rounds older than the newest"
PRUNE_DESCRIPTION = (
    "Keeps every result a stage reads (each re-dock nominee with its SMILES and "
    "predicted score, the inference counts) and the newest round's predictions; older rounds' "
    "predictions go, and the file shrinks. Refused while a run uses the directory."
)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help=RUN_HELP, description=RUN_DESCRIPTION)
    p.add_argument("campaign", type=Path, help="campaign TOML, e.g. campaigns/demo.toml")
    p.add_argument(
        "--run-dir", type=Path, help="where results go (default: the file's campaign.run_dir or runs/<name>)"
    )
    p.add_argument("--cores", type=int, help="override pilot.cores")
    p.add_argument(
        "--oversubscribe", action="store_true", help="allow more cores than this machine has (sets pilot.oversubscribe)"
    )
    p.add_argument(
        "--backend",
        choices=("auto", *BACKEND_NAMES),
        help="serve every task kind with this backend (overrides pilot.routes)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in batch logs)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    p.set_defaults(handler=_run)

    p = sub.add_parser("status", help="progress of a run directory, per stage")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--watch",
        action="store_true",
        help="redraw every --every seconds while the campaign runs: stage counts, tasks/s, busy cores",
    )
    p.add_argument("--every", type=float, default=5.0, metavar="S", help="seconds between redraws (default 5)")
    p.add_argument(
        "--window",
        type=float,
        default=60.0,
        metavar="S",
        help="tasks/s and busy cores over the last S seconds (default 60)",
    )
    p.set_defaults(handler=_status)

    p = sub.add_parser("report", help="write the HTML report of a run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report/index.html")
    _add_hit_options(p)
    p.set_defaults(handler=_report)

    p = sub.add_parser(
        "export",
        help="write the ranked hits as CSV and SDF, the diverse picks (diverse.csv/.sdf), "
        "and the compounds the library preparation dropped, with the rule (library_dropped.csv)",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="folder (default: RUN_DIR/export)")
    p.add_argument("--top", type=int, default=None, help="only the best N")
    _add_hit_options(p)
    p.set_defaults(handler=_export)

    p = sub.add_parser("prune", help=PRUNE_HELP, description=PRUNE_DESCRIPTION)
    p.add_argument("run_dir", type=Path)
    p.set_defaults(handler=_prune)

    from ..benchmark import register as register_benchmark
    from ..compare import register as register_compare
    from ..emulate import register as register_emulate
    from ..model import register as register_model
    from .library import register as register_library
    from .resources import register as register_resources

    register_resources(sub)
    register_benchmark(sub)
    register_compare(sub)
    register_emulate(sub)
    register_library(sub)
    register_model(sub)


def _add_hit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hinge",
        action="append",
        metavar="RES",
        help="a hinge residue, e.g. VAL2240.B (repeat for more; default: the campaign's [hits] hinge_residues)",
    )
    p.add_argument(
        "--require-hinge", action="store_true", default=None, help="the diverse picks must make a hinge backbone H-bond"
    )


def load(path: Path, *, cores: int | None = None, backend: str | None = None, oversubscribe: bool = False) -> Any:
    """The campaign file with the command line's overrides; a bad file is a UserError (one clear line)."""
    from ..config import CampaignError, load_with_overrides

    try:
        return load_with_overrides(path, cores=cores, backend=backend, oversubscribe=oversubscribe)
    except CampaignError as exc:
        raise UserError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    """A SIGTERM (a batch system's time limit) before or after the task loop stops the command as Ctrl-C
    does, not by the default action, which skips every cleanup (the task loop keeps results either way)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _run_campaign(args)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run_campaign(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_campaign(args: argparse.Namespace) -> int:
    from ..api import run_campaign
    from ..campaign import CampaignInputError, CampaignInterrupted
    from ..lock import RunDirBusy

    campaign = load(args.campaign, cores=args.cores, backend=args.backend, oversubscribe=args.oversubscribe)
    run_dir = campaign.run_dir(args.run_dir)
    try:
        run = run_campaign(campaign, run_dir, progress=not args.no_progress)
    except CampaignInterrupted as exc:
        print(str(exc))
        return 130
    except (CampaignInputError, RunDirBusy) as exc:
        raise UserError(str(exc)) from None
    print(f"campaign {campaign.name} finished: results in {run_dir}/campaign.db")
    failed = run.status().failed_tasks
    for failure in failed:
        print(f"  failed: {failure}")
    from ..results import print_top

    print_top(run.ranked(10))
    if not args.no_report:
        print(f"report: {run.report()}")
    return 1 if failed else 0


def _status(args: argparse.Namespace) -> int:
    from ..results import print_status
    from ..store import store_errors

    run = _open(args.run_dir)
    if args.watch:
        from ..watch import watch

        if args.every <= 0 or args.window <= 0:
            raise UserError("--every and --window must be > 0 seconds")
        watch(args.run_dir, args.every, args.window)
        return 0
    with store_errors(run.run_dir / "campaign.db"):
        print_status(run.status())
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..store import store_errors

    run = _open(args.run_dir)
    with store_errors(run.run_dir / "campaign.db"):
        print(f"wrote {_hit_options(run.report, args, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..store import store_errors

    run = _open(args.run_dir)
    with store_errors(run.run_dir / "campaign.db"):
        done = _hit_options(run.export, args, args.out, top=args.top)
    print(f"wrote {done.n_hits} ranked compounds to {done.hits_csv} and {done.hits_sdf}")
    print(f"wrote {done.n_diverse} diverse picks (one per ECFP4 cluster) to {done.diverse_csv} and {done.diverse_sdf}")
    for note in done.notes:
        print(f"note: {note}")
    return 0


def _hit_options(write: Any, args: argparse.Namespace, *pos: Any, **kw: Any) -> Any:
    """``run.report`` or ``run.export`` with --hinge/--require-hinge; bad ones are a UserError before any work."""
    try:
        return write(*pos, hinge=args.hinge, require_hinge=args.require_hinge, **kw)
    except ValueError as exc:
        if str(exc).startswith("[hits] settings:"):
            raise UserError(str(exc)) from None
        raise


def _prune(args: argparse.Namespace) -> int:
    from ..lock import RunDirBusy, RunDirLock
    from ..store import Store

    _open(args.run_dir)
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
    """The run directory through the API; none there is a UserError."""
    from ..api import open_run

    try:
        return open_run(run_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
