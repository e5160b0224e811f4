"""``impeccable compare``: the same campaign through the pilot and through a per-task baseline (srun), side by side.

Fairness: the same campaign file, the same cores, the same tasks and inputs, each
run into a fresh run directory; the comparison checks that both runs produced the
same docking scores before it reports any timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import UserError
from .fileio import write_json
from .runtime.backends import BACKEND_NAMES

COMPARE_HELP = "run a campaign through the pilot and through srun; compare makespans"
COMPARE_DESCRIPTION = """Runs the campaign twice on the same allocation (pilot with its configured or best available
backends, then every task as its own srun step) and reports makespan, throughput per stage, utilisation and the
pilot/srun ratio."""  # argparse refills the lines


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help=COMPARE_HELP, description=COMPARE_DESCRIPTION)
    p.add_argument("campaign", type=Path)
    p.add_argument("--baseline", default="srun", choices=("srun", "local"), help="backend for every task kind")
    p.add_argument(
        "--pilot-backend",
        default=None,
        choices=("auto", *(n for n in BACKEND_NAMES if n != "srun")),
        help="serve both kinds with this backend (default: the campaign's pilot.routes)",
    )
    p.add_argument("--cores", type=int, help="override pilot.cores for both runs")
    p.add_argument(
        "--nodes",
        type=int,
        help="both runs on this many nodes of a Slurm job: the one this runs in, "
        "else (srun baseline) a fresh `salloc -N NODES --exclusive --no-kill` held for both; "
        "cores default to all the job gives on them",
    )
    p.add_argument(
        "--pilot-routes",
        metavar="KIND=BACKEND,...",
        type=_routes,
        help="the pilot's routes, e.g. executable=flux,function=dragon (several nodes: backends "
        "that start tasks on every node)",
    )
    p.add_argument("--oversubscribe", action="store_true", help="allow more cores than this machine has")
    local_slurm = "no Slurm here? a throwaway one-node Slurm for the srun run (root; installs Debian's if missing)"
    p.add_argument("--local-slurm", action="store_true", help=local_slurm)
    p.add_argument("--out", type=Path, help="folder for both runs and the comparison (default runs/<name>-compare)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from .runtime.backends import is_available

    if args.nodes is not None and args.nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {args.nodes}")
    cluster = None
    if args.baseline == "srun" and args.local_slurm:
        from .runtime.backends.slurm.local import start as start_local_slurm

        print("starting a throwaway single-node Slurm (--local-slurm) ...")
        cluster = start_local_slurm()
        if not cluster.ok:
            raise UserError(f"--local-slurm: could not start a local Slurm: {cluster.reason}")
    try:
        ok, why = is_available(args.baseline)
        if not ok:
            hint = ""
            if args.baseline == "srun":
                hint = (
                    "; run the comparison inside a Slurm allocation (salloc/sbatch), or add --local-slurm to "
                    "start a throwaway single-node Slurm on this machine for it (needs root)"
                )
            raise UserError(f"the {args.baseline} baseline cannot run here: {why}{hint}")
        if args.nodes and args.nodes > 1 and args.baseline == "srun":
            from .runtime.backends.slurm.srun import job_of_nodes

            with job_of_nodes(args.nodes) as job:
                print(
                    f"both runs on nodes {', '.join(job.names)} ({job.cores_per_node} cores each) of Slurm job "
                    f"{os.environ['SLURM_JOB_ID']}"
                )
                return _compare_runs(args)
        return _compare_runs(args)
    finally:
        if cluster is not None:
            cluster.stop()


def _compare_runs(args: argparse.Namespace) -> int:
    from .campaign import CampaignRunner
    from .config import CampaignError, load_with_overrides
    from .progress import ProgressView

    try:
        base = load_with_overrides(args.campaign, cores=args.cores, oversubscribe=args.oversubscribe)
    except CampaignError as exc:
        raise UserError(str(exc)) from None
    if args.nodes:  # the job's cores on those nodes, unless --cores says otherwise
        base = base.model_copy(
            update={"pilot": base.pilot.model_copy(update={"nodes": args.nodes, "cores": args.cores})}
        )
    out = args.out or Path("runs") / f"{base.name}-compare"
    runs: dict[str, dict[str, Any]] = {}
    for label, routes in (("pilot", None), (args.baseline, args.baseline)):
        routes = routes or args.pilot_backend
        campaign = base
        if routes or (label == "pilot" and args.pilot_routes):
            campaign = base.model_copy(
                update={
                    "pilot": base.pilot.model_copy(
                        update={"routes": {"executable": routes, "function": routes} if routes else args.pilot_routes}
                    )
                }
            )
        run_dir = out / label
        shutil.rmtree(run_dir, ignore_errors=True)  # a comparison always starts from nothing
        print(f"== {label}: {campaign.name} into {run_dir}")
        runner = CampaignRunner(campaign, run_dir, progress=ProgressView())
        with runner.progress:
            runner.run()
        runs[label] = {"run_dir": run_dir, "store": runner.store}
    result = compare_runs(runs["pilot"]["store"], runs[args.baseline]["store"], args.baseline)
    report = write_compare_report(out, result, runs)
    _print(result)
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    print(f"report: {report}")
    if not result["docking_scores_agree"]:
        raise UserError("the two runs disagree on docking scores: the comparison is not fair (see the report)")
    return 0


def _routes(text: str) -> dict[str, str]:
    """``executable=flux,function=dragon`` -> the routes mapping (both kinds named)."""
    routes = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if set(routes) != {"executable", "function"} or not all(routes.values()):
        raise argparse.ArgumentTypeError(f"give both kinds, e.g. executable=flux,function=dragon; got {text!r}")
    return routes


def compare_runs(pilot_store: Any, base_store: Any, baseline: str) -> dict[str, Any]:
    from .measure import run_figures

    pilot, base = run_figures(pilot_store), run_figures(base_store)
    a, b = pilot_store.dock_score_map(), base_store.dock_score_map()
    common = set(a) & set(b)
    mismatched = sorted(c for c in common if abs(a[c] - b[c]) > 1e-3)
    return {
        "baseline": baseline,
        "pilot": pilot,
        baseline: base,
        "makespan_ratio": pilot["makespan_s"] / base["makespan_s"] if base["makespan_s"] else None,
        "docked_compounds": {"pilot": len(a), baseline: len(b), "common": len(common)},
        "docking_scores_agree": bool(common) and not mismatched and set(a) == set(b),
        "docking_mismatches": mismatched[:20],
        "nodes": pilot["nodes"],
        "per_node_utilization": {"pilot": pilot["per_node_utilization"], baseline: base["per_node_utilization"]},
    }


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = result["baseline"]
    p, b = result["pilot"], result[base]
    t = Table(title=f"pilot vs {base}")
    for col in ("figure", "pilot", base):
        t.add_column(col)
    t.add_row(
        "routes",
        ", ".join(f"{k}: {v}" for k, v in p["routes"].items()),
        ", ".join(f"{k}: {v}" for k, v in b["routes"].items()),
    )
    t.add_row("makespan (s)", f"{p['makespan_s']:.1f}", f"{b['makespan_s']:.1f}")
    t.add_row("tasks", str(p["tasks"]), str(b["tasks"]))
    t.add_row("throughput (tasks/s)", f"{p['throughput_tasks_per_s']:.2f}", f"{b['throughput_tasks_per_s']:.2f}")
    t.add_row("utilisation", f"{100 * p['utilization']:.1f} %", f"{100 * b['utilization']:.1f} %")
    if p.get("gpu_utilization") is not None or b.get("gpu_utilization") is not None:
        t.add_row(
            "GPU utilisation",
            *(
                f"{100 * f['gpu_utilization']:.1f} % of {f['gpus']:g}"
                if f.get("gpu_utilization") is not None
                else "no GPU"
                for f in (p, b)
            ),
        )
    t.add_row(
        "median launch overhead (ms)",
        f"{1e3 * p['launch_overhead_median_s']:.1f}",
        f"{1e3 * b['launch_overhead_median_s']:.1f}",
    )
    Console().print(t)
    if len(result["nodes"]) > 1:
        per_node = Table(title="utilisation per node")
        for col in ("node", "pilot", base):
            per_node.add_column(col)
        for node in result["nodes"]:
            per_node.add_row(
                node,
                *(f"{100 * result['per_node_utilization'][side].get(node, 0.0):.1f} %" for side in ("pilot", base)),
            )
        Console().print(per_node)
    ratio = result["makespan_ratio"]
    print(f"makespan ratio pilot/{base}: {ratio:.2f}" if ratio else "makespan ratio: n/a")
    print("docking scores agree" if result["docking_scores_agree"] else "docking scores DISAGREE")


def write_compare_report(out: Path, result: dict[str, Any], runs: dict[str, dict[str, Any]]) -> Path:
    base = result["baseline"]
    summary = (
        f"<p>makespan ratio pilot/{base}: <b>{result['makespan_ratio']:.2f}</b>; docking scores "
        f"{'agree' if result['docking_scores_agree'] else 'DISAGREE'} "
        f"({result['docked_compounds']['common']} compounds in both runs)</p>"
    )
    from .sidebyside import explain, write_side_by_side

    return write_side_by_side(
        out / "compare.html",
        f"Pilot vs {base}",
        summary,
        [(label, result[label], runs[label]["store"]) for label in ("pilot", base)],
        explain(result),
    )
