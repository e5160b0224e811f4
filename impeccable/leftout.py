"""What a campaign leaves out of its library, stored with the reason, and said in numbers when it matters.

Every library row is either scored or stored as left out (``failures``, with a
category from :mod:`.stages.skips`; docking's own failures stay in ``docking``).
This module holds the campaign's side of that: every compound left out (library stage included), the
one-line summary by reason, the warnings when a stage gets fewer compounds than
asked, and the error of a run that cannot train, naming the library.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from .config import Campaign
from .inputs import CampaignInputError
from .library_store import LibraryStore
from .store import Store

MIN_TRAINING_SCORES = 8  # docking scores the surrogate needs, at the least


def skipped(store: Store) -> Iterator[tuple[str, str, str, str]]:
    """(id, stage, category, reason) of every compound left out anywhere: the failures table and the
    compounds docking could not score, stage by stage, and what the library stage dropped (stage
    ``library stage``; stage ``library`` holds the rows the reader skipped)."""
    from .stages.skips import category

    columns = {row[1] for row in store.db.execute("PRAGMA table_info(failures)")}
    cat_column = "category" if "category" in columns else "NULL"  # a store older than categories
    rows = store.db.execute(
        f"SELECT id, stage, {cat_column}, reason FROM failures UNION ALL "
        "SELECT id, origin || ' dock', NULL, error FROM docking WHERE score IS NULL ORDER BY 2, 1"
    )
    for cid, stage, cat, reason in rows:
        yield cid, stage, cat or category(reason or ""), reason or ""
    library = LibraryStore(store, create=False)  # may be called inside the task loop's open group
    for cid, kind, why in library.dropped() if library.present else ():  # the library stage's own accounting
        yield cid, "library stage", _library_category(kind, why), why


def skip_counts(store: Store) -> list[tuple[str, str, int]]:
    """(stage, category, compounds) over :func:`skipped`, stage by stage, largest first."""
    counts: dict[tuple[str, str], int] = {}
    for _, stage, cat, _ in skipped(store):
        counts[stage, cat] = counts.get((stage, cat), 0) + 1
    return sorted(((stage, cat, n) for (stage, cat), n in counts.items()), key=lambda row: (row[0], -row[2]))


def _library_category(kind: str, why: str) -> str:
    """``duplicate``, ``filter: <rule>`` (the rule's name before its bound) or a failure's category."""
    from .stages.skips import category

    if kind == "duplicate":
        return "duplicate"
    if kind == "filtered":
        return "filter: " + why.split(":")[0].split(" (")[0].strip()
    return category(why)


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def summary(store: Store) -> str:
    """``2 empty (library), 1 parse (seed dock), ...``: every compound left out so far, by reason and stage."""
    return ", ".join(f"{n} {cat} ({stage})" for stage, cat, n in skip_counts(store)) or "none"


def too_few_to_train(c: Campaign, store: Store, n_scores: int, library_size: int, run_dir: Path) -> CampaignInputError:
    return CampaignInputError(
        f"only {n_scores} compounds docked successfully, too few to train the surrogate (it needs "
        f"{MIN_TRAINING_SCORES}): library {c.library.describe()}, {library_size} compounds, seed sample of "
        f"{len(store.selected(0, 'seed'))}; compounds left out, by reason (stage): {summary(store)}. "
        f"`impeccable export {run_dir}` lists each one (skipped.csv)"
    )


def check_seed_sample(c: Campaign, store: Store, sampled: int, library_size: int) -> None:
    """Warn when the filters left fewer compounds than ``dock.seed_sample`` asked for (and the library has)."""
    if sampled < min(c.dock.seed_sample, library_size):
        warn(
            f"dock.seed_sample = {c.dock.seed_sample} but only {sampled} compounds of {c.library.describe()} could be "
            f"sampled ({library_size} compounds; left out: {summary(store)})"
        )


def check_nominees(c: Campaign, store: Store, r: int) -> None:
    """Warn when round ``r`` found fewer compounds to re-dock than ``redock.top_k``."""
    nominated = len(store.selected(r, "redock"))
    if nominated < c.redock.top_k:
        warn(
            f"round {r}: redock.top_k = {c.redock.top_k} but only {nominated} compounds of {c.library.describe()} "
            f"were scored and not docked yet (left out: {summary(store)})"
        )
