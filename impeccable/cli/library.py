"""``impeccable library inspect`` and ``impeccable library bench``: argument parsing over library_inspect and library_bench."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_json

INSPECT_HELP = "counts, rules, property histograms, scaffolds and cost of a library"
INSPECT_DESCRIPTION = (
    "TARGET is a campaign file (its sources, preparation, filters and cost) or a "
    "library: a file, a glob or a folder, prepared as the options say."
)

BENCH_HELP = "inspect's rate against a plain RDKit loop over the same molecules"
BENCH_DESCRIPTION = (
    "Writes the library --repeat-library times over with new ids, then measures "
    "inspect (pilot, batches) and a plain loop of the same RDKit calls split over the same cores, "
    "side by side, --repeat times; prints the medians and their ratio."
)


def register(sub: Any) -> None:
    p = sub.add_parser("library", help="look at a compound library before a campaign spends hours on it")
    lib = p.add_subparsers(title="library commands", metavar="COMMAND")
    i = lib.add_parser("inspect", help=INSPECT_HELP, description=INSPECT_DESCRIPTION)
    i.add_argument("target", help="campaign .toml, or a library file / glob / folder")
    i.add_argument("--json", type=Path, metavar="OUT.json", help="write the full profile as JSON")
    i.add_argument("--html", type=Path, metavar="OUT.html", help="write the profile as a self-contained HTML page")
    i.add_argument("--cores", type=int, default=2, help="function workers (default 2)")
    i.add_argument("--limit", type=int, help="only the first N records")
    i.add_argument("--batch-size", type=int, help="records per task (default: the campaign's, else 2000)")
    _add_preparation_arguments(i)
    i.set_defaults(handler=_inspect)
    _add_bench(lib)
    p.set_defaults(handler=lambda args: p.print_help())


def _add_bench(lib: Any) -> None:
    b = lib.add_parser("bench", help=BENCH_HELP, description=BENCH_DESCRIPTION)
    b.add_argument("--library", type=Path, default=Path("data/library/moses_20k.csv"))
    for flag, default, text in (
        ("--repeat-library", 10, "copies with new ids (default 10)"),
        ("--repeat", 3, "runs of each (default 3); medians are reported"),
        ("--cores", 2, "function workers, and processes of the plain loop (default 2)"),
    ):
        b.add_argument(flag, type=int, default=default, help=text)
    b.add_argument("--work-dir", type=Path, default=Path("runs/library-bench"), help="where the big library goes")
    b.add_argument("--json", type=Path, metavar="OUT.json")
    _add_preparation_arguments(b)
    b.set_defaults(handler=_bench)


def _add_preparation_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preparation of a library file (a campaign file brings its own)")
    g.add_argument("--id-column", default="id")
    g.add_argument("--smiles-column", default="smiles")
    g.add_argument("--standardize", action="store_true", help="largest fragment, neutralised")
    g.add_argument("--tautomer", action="store_true", help="and the canonical tautomer (slow)")
    g.add_argument("--deduplicate", action="store_true", help="count duplicates by InChIKey")
    g.add_argument("--preset", action="append", default=[], choices=("ro5", "veber", "lead-like", "ro3"))
    g.add_argument("--alerts", default="", help="comma-separated alert sets, e.g. pains,brenk,nih,chembl")


def preparation_from_args(args: argparse.Namespace) -> dict[str, Any]:
    alerts = [a.strip() for a in args.alerts.split(",") if a.strip()]
    return {
        "standardize": args.standardize or args.tautomer,
        "tautomer": args.tautomer,
        "deduplicate": args.deduplicate,
        "filters": {"presets": args.preset, "alerts": alerts},
    }


def _inspect(args: argparse.Namespace) -> int:
    from ..library_inspect import campaign_cost, inspect_library
    from ..stages.errors import StageInputError
    from ..stages.library_sources import LibrarySource

    campaign, title = None, args.target
    try:
        if args.target.endswith(".toml"):
            from ..config import CampaignError, load_campaign
            from ..library_stage import campaign_sources

            try:
                campaign = load_campaign(Path(args.target))
            except CampaignError as exc:
                raise UserError(str(exc)) from None
            sources, prefix = campaign_sources(campaign)
            settings, batch = campaign.library.preparation(), campaign.library.batch_size
            limit = args.limit or campaign.library.limit
            title = f"{campaign.name} ({args.target})"
        else:
            sources = [LibrarySource.from_spec("library", args.target, args.id_column, args.smiles_column)]
            prefix, settings, batch, limit = False, preparation_from_args(args), 2000, args.limit
        report = inspect_library(
            sources, prefix, settings, limit=limit, cores=args.cores, batch_size=args.batch_size or batch
        )
    except StageInputError as exc:
        raise UserError(str(exc)) from None
    if campaign is not None:
        report["cost"] = campaign_cost(report["kept"], campaign)
    _print(report)
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.html:
        from ..library_html import write_html

        print(f"wrote {write_html(report, args.html, title)}")
    return 0


def _print(r: dict[str, Any]) -> None:
    print(
        f"rows {r['rows']}: failed {r['failed']}, duplicates {r['duplicates']}, filtered {r['filtered']}, "
        f"kept {r['kept']} ({'adds up' if r['adds_up'] else 'DOES NOT ADD UP'}); {r['mol_per_s']:,.0f} molecules/s"
    )
    for rule, n in r["filtered_by_rule"].items():
        print(f"  dropped by {rule}: {n}")
    for reason, n in r["failed_by_reason"].items():
        print(f"  failed, {reason}: {n}")
    if r.get("cost"):
        c = r["cost"]
        print(
            f"estimated cost: {c['docking_tasks']} docking tasks, {c['docking_core_hours']} docking core-hours, "
            f"{c['inference_core_hours']} inference core-hours ({c['basis']})"
        )


def _bench(args: argparse.Namespace) -> int:
    from ..library_bench import run_bench

    try:
        result = run_bench(
            args.library, args.repeat_library, args.repeat, args.cores, args.work_dir, preparation_from_args(args)
        )
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0
