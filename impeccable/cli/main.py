"""The ``impeccable`` command.

Errors a user can act on print one line (``error: ...``) and exit 2; pass
``--debug`` for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..fileio import write_json

BENCH_HELP = "run a synthetic workload through the pilot and the raw baseline, side by side"
BENCH_DESCRIPTION = (
    "Runs N identical tasks through a fresh pilot and through the backend's plain mechanism "
    "(subprocess / multiprocessing.Pool for local) in the same run, and prints medians over --repeat runs."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if args.debug:
            raise
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return 2


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split()) if isinstance(exc, UserError) else f"{text}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="impeccable",
        description="IMPECCABLE-style drug-discovery campaigns on a pilot runtime (Flux, Dragon, local, srun).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=None)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(handler=_version)

    _add_bench(sub)
    p = sub.add_parser(
        "bench-inference",
        help="the campaign's surrogate inference alone over a library: "
        "molecules/s, CPU, peak memory, store size (JSON)",
    )
    from ..inferbench import add_arguments as add_inferbench_arguments

    add_inferbench_arguments(p)
    p.set_defaults(handler=_bench_inference)
    p = sub.add_parser("validate", help="measure redocking, surrogate CV and top-k retrieval on shipped data (JSON)")
    from ..stages.validate import add_arguments

    add_arguments(p)
    p.set_defaults(handler=_validate)
    from . import commands  # campaign commands: run, status, report, export, prune (and the others)

    commands.register(sub)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from ..stages.errors import StageInputError
    from ..stages.validate import run_from_args

    try:
        return run_from_args(args)
    except StageInputError as exc:
        raise UserError(str(exc)) from None


def _version(args: argparse.Namespace) -> int:
    print(f"impeccable {__version__}")
    return 0


# ---------------------------------------------------------------- bench
def _add_bench(sub: Any) -> None:
    from ..runtime.backends import names as backend_names
    from ..runtime.bench import WORKLOADS

    p = sub.add_parser("bench", help=BENCH_HELP, description=BENCH_DESCRIPTION)
    p.add_argument(
        "--backend",
        default="local",
        choices=[*backend_names(), "hybrid"],
        help="hybrid: half executables, half functions, routed auto (Flux + Dragon where found)",
    )
    p.add_argument(
        "--workload",
        default="null-exec",
        choices=[*WORKLOADS, "campaign", "gpu"],
        help="campaign: the campaign manager itself, on a synthetic campaign of null tasks "
        "(at 10k, 50k and --tasks tasks); gpu: the surrogate, inference, MD and MM/GBSA on all "
        "CPU cores and on one GPU (impeccable/gpubench.py; the other options but --cores and "
        "--json do not apply)",
    )
    p.add_argument("--tasks", type=int, default=1000, help="tasks per run (default 1000)")
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores the pilot owns (may exceed the machine's; default: this machine's, 16 for campaign)",
    )
    p.add_argument("--duration", type=float, default=1.0, help="seconds per task for sleep workloads (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported (default 3)")
    p.add_argument("--partitions", type=int, default=None, help="Flux instances to split the nodes over")
    p.add_argument("--nodes", type=int, default=1, help="emulated nodes the cores are spread over (default 1)")
    p.add_argument(
        "--exclusive",
        action="store_true",
        help="fence the cores between runtimes (static shares) instead of lending them",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="phased hybrid: also run static shares (cores fenced), interleaved, for comparison",
    )
    p.add_argument("--no-raw", action="store_true", help="skip the raw baseline")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="write the figures and machine info here")
    p.add_argument("--md-inputs", type=Path, metavar="DIR", help="gpu: MD systems prepared with --prepare-md")
    prepare = "gpu: only prepare the MD systems into DIR (needs AmberTools; carry DIR to a GPU machine)"
    p.add_argument("--prepare-md", type=Path, metavar="DIR", help=prepare)
    p.add_argument("--quick", action="store_true", help="gpu: few epochs, molecules and steps (a check, not figures)")
    p.set_defaults(handler=_bench)


def _bench_inference(args: argparse.Namespace) -> int:
    from ..inferbench import run

    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None


def _bench(args: argparse.Namespace) -> int:
    from ..runtime.bench import bench

    if args.workload == "campaign":
        return _bench_campaign(args)
    if args.workload == "gpu":
        return _bench_gpu(args)
    args.cores = os.cpu_count() if args.cores is None else args.cores
    if args.tasks < 1 or args.cores is None or args.cores < 1 or args.repeat < 1 or args.nodes < 1:
        raise UserError("--tasks, --cores, --nodes and --repeat must be at least 1")
    if args.cores % args.nodes:
        raise UserError(f"--cores {args.cores} does not split evenly over --nodes {args.nodes}")
    options: dict[str, dict[str, Any]] = {}
    if args.partitions is not None:
        options["flux"] = {"partitions": args.partitions}
    from ..runtime.bench import BenchStuck

    try:
        result = bench(
            args.backend,
            args.workload,
            args.tasks,
            args.cores,
            args.duration,
            args.repeat,
            options=options,
            raw=not args.no_raw,
            nodes=args.nodes,
            exclusive=args.exclusive,
            static=args.static,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except BenchStuck as exc:
        print(f"impeccable bench: {exc}", file=sys.stderr)
        return 1
    _print_bench(result)
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    for event in result["stall_events"]:
        print(f"impeccable bench: stall watchdog: {event['kind']} in {event['runtime']}", file=sys.stderr)
    return 1 if result["stall_events"] else 0


def _bench_campaign(args: argparse.Namespace) -> int:
    from ..campaignbench import bench_campaign

    if args.tasks < 100:
        raise UserError("--tasks: a campaign benchmark needs at least 100 tasks")
    sizes = [s for s in (10_000, 50_000) if s < args.tasks] + [args.tasks]
    result = bench_campaign(sizes, cores=16 if args.cores is None else args.cores, repeat=args.repeat)
    for _size, run in result["sizes"].items():
        cpu = run["main_thread_cpu_s"]
        print(
            f"{run['tasks']:>8,} tasks: manager {run['manager_ms_per_task']:.3f} ms/task (main thread: dispatch+record "
            f"{cpu['dispatch_and_record']:.2f} s, of which handlers {cpu['handlers']:.2f} s and task records "
            f"{cpu['task_records']:.2f} s; start-up {cpu['startup']:.2f} s; library {run['library_passes']} passes of "
            f"{run['library_pass_s']:.2f} s), dispatcher {run['dispatcher_ms_per_task']:.3f} ms/task, "
            f"{run['manager_tasks_per_s']:,.0f} tasks/s"
        )
    print(
        f"manager_ms_per_task {result['manager_ms_per_task']:.3f}, growth_ratio {result['growth_ratio']:.2f}, "
        f"manager_tasks_per_s {result['manager_tasks_per_s']:,.0f}"
    )
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def _bench_gpu(args: argparse.Namespace) -> int:
    if args.prepare_md:
        import tempfile

        from ..gpubench_md import prepare_inputs

        with tempfile.TemporaryDirectory(prefix="impeccable-md-prepare-") as work:
            print(f"MD inputs in {prepare_inputs(args.prepare_md, Path(work))}")
        return 0
    from ..gpubench import run

    if args.cores is not None and args.cores < 1:
        raise UserError("--cores must be at least 1")
    return run(args)


def _print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result['workload']} x {result['tasks']} on {result['cores']} cores ({result['nodes']} node(s), {result['sharing']}), "
        f"backend {result['backend']} (median of {result['repeat']})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    raw = result["raw_throughput_tasks_per_s"]
    rows = [
        ("throughput (tasks/s)", f"{result['throughput_tasks_per_s']:,.0f}"),
        ("steady-state throughput (tasks/s)", f"{result['steady_throughput_tasks_per_s']:,.0f}"),
        ("raw baseline (tasks/s)", f"{raw:,.0f}" if raw else "n/a"),
        ("ours / raw", f"{result['ratio_to_raw']:.2f}" if result["ratio_to_raw"] else "n/a"),
        ("utilisation", f"{100 * result['utilization']:.2f} %"),
        ("makespan (s)", f"{result['makespan_s']:.3f}"),
        ("pilot start-up (s)", f"{result['startup_s']:.3f}"),
        (
            "queue wait median / p95 (ms)",
            f"{1e3 * result['queue_wait_median_s']:.2f} / {1e3 * result['queue_wait_p95_s']:.2f}",
        ),
        (
            "launch overhead median / p95 (ms)",
            f"{1e3 * result['launch_overhead_median_s']:.3f} / {1e3 * result['launch_overhead_p95_s']:.3f}",
        ),
        *(
            (f"lost: {k.replace('_', ' ')}", f"{100 * v:.2f} %")
            for k, v in result.get("losses", {}).items()
            if k != "busy"
        ),
        ("peak busy cores", f"{result['peak_busy_cores']}"),
        (
            "CPU per task, pilot / child processes (ms)",
            f"{result['pilot_cpu_per_task_ms']:.2f} / {result['child_cpu_per_task_ms']:.2f}",
        ),
        ("machine CPU busy (all usable cores)", f"{100 * result['machine_cpu_busy']:.0f} %"),
        ("done / failed / canceled", f"{result['done']:.0f} / {result['failed']:.0f} / {result['canceled']:.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for name, m in (result.get("per_backend") or {}).items():
        table.add_row(
            f"{name} ({', '.join(m['serves'])}, {m['cores']} cores)",
            f"{m['throughput_tasks_per_s']:,.0f} tasks/s, {100 * m['utilization']:.1f} %",
        )
    if result.get("static"):
        st = result["static"]
        table.add_row(
            "static shares: utilisation / makespan (s)", f"{100 * st['utilization']:.2f} % / {st['makespan_s']:.2f}"
        )
    Console().print(table)
