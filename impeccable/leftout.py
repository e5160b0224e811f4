"""What a campaign leaves out of its library, stored with the reason, and said in numbers when it matters.

Every library row is either scored or stored as left out (``failures``, with a
category from :mod:`.stages.skips`; docking's own failures stay in ``docking``).
This module holds the campaign's side of that: the seed sample's refusals, the
one-line summary by reason, the warnings when a stage gets fewer compounds than
asked, and the error of a run that cannot train, naming the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .config import Campaign
from .inputs import CampaignInputError
from .store import Store, skip_counts

MIN_TRAINING_SCORES = 8  # docking scores the surrogate needs, at the least


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def store_rejects(store: Store, rejected: list[tuple[str, str]]) -> None:
    """Compounds the seed sample's filters refused, stored with their reasons as inference stores them
    (a filter's decision under ``filter``, an unusable molecule under ``prepare``)."""
    from .stages.skips import is_filter

    store.add_failures("filter", [(cid, why) for cid, why in rejected if is_filter(why)])
    store.add_failures("prepare", [(cid, why) for cid, why in rejected if not is_filter(why)])


def summary(store: Store) -> str:
    """``2 empty (library), 1 parse (seed dock), ...``: every compound left out so far, by reason and stage."""
    return ", ".join(f"{n} {cat} ({stage})" for stage, cat, n in skip_counts(store)) or "none"


def too_few_to_train(c: Campaign, store: Store, n_scores: int, library_size: int, run_dir: Path) -> CampaignInputError:
    return CampaignInputError(
        f"only {n_scores} compounds docked successfully, too few to train the surrogate (it needs "
        f"{MIN_TRAINING_SCORES}): library {c.library.path}, {library_size} compounds, seed sample of "
        f"{len(store.selected(0, 'seed'))}; compounds left out, by reason (stage): {summary(store)}. "
        f"`impeccable export {run_dir}` lists each one (skipped.csv)")


def check_seed_sample(c: Campaign, store: Store, sampled: int, library_size: int) -> None:
    """Warn when the filters left fewer compounds than ``dock.seed_sample`` asked for (and the library has)."""
    if sampled < min(c.dock.seed_sample, library_size):
        warn(f"dock.seed_sample = {c.dock.seed_sample} but only {sampled} compounds of {c.library.path} could be "
             f"sampled ({library_size} compounds; left out: {summary(store)})")


def check_nominees(c: Campaign, store: Store, r: int) -> None:
    """Warn when round ``r`` found fewer compounds to re-dock than ``redock.top_k``."""
    nominated = len(store.selected(r, "redock"))
    if nominated < c.redock.top_k:
        warn(f"round {r}: redock.top_k = {c.redock.top_k} but only {nominated} compounds of {c.library.path} "
             f"were scored and not docked yet (left out: {summary(store)})")
