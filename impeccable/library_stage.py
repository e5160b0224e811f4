"""The campaign's library: its sources read as one stream, prepared by function tasks, and the seed sample.

Preparation (standardise, filter, key for deduplication: stages/prepare.py)
runs in batches of ``library.batch_size`` as function tasks on the pilot, a
bounded number in flight, never in the manager. Results are committed in
library order whatever order the tasks finish in, so the compound kept among
duplicates (the first in library order) is the same on any backend and after
any resume; each batch commits with its done mark (:mod:`.library_store`), and
a resumed run starts after the last committed batch.

A library that needs no preparation (no filters, no standardisation, no
deduplication) is streamed from its files as it is, as before.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from .config import Campaign
from .library_store import LibraryStore, PreparedBatch, key_hash
from .progress import CampaignProgress
from .runtime import TaskFuture, TaskState
from .stages.library import LibraryRecord
from .stages.library_sources import LibrarySource, SourcedRecord, iter_sources
from .store import Store

STAGE = "library"


def campaign_sources(campaign: Campaign) -> tuple[list[LibrarySource], bool]:
    """The campaign's sources with their files, and whether ids carry the source name (named sources)."""
    lib = campaign.library
    sources = [
        LibrarySource.from_spec(name, spec, id_col, smi_col) for name, spec, id_col, smi_col in lib.source_list()
    ]
    return sources, bool(lib.sources)


def raw_records(campaign: Campaign) -> Iterator[SourcedRecord]:
    """Every record of the campaign's sources in order, the first ``library.limit`` only."""
    sources, prefix = campaign_sources(campaign)
    return itertools.islice(iter_sources(sources, prefix=prefix), campaign.library.limit)


class CampaignLibrary:
    """The compounds a campaign screens, streamed: the prepared library (or the raw one), batches, the seed."""

    def __init__(self, campaign: Campaign, store: Store, stages: Any, progress: CampaignProgress) -> None:
        from .stages.prepare import settings_need_preparation

        self.c = campaign
        self.settings = campaign.library.preparation()
        self.prepared = settings_need_preparation(self.settings)
        self.store = LibraryStore(store)
        self.stages, self.progress = stages, progress
        self.rows = 0  # records in the library (the first library.limit): set by the runner from the scan
        self.size = 0  # compounds screened: set by prepare()

    def prepare(self, tasks: Any, cores: int, then: Callable[[], None]) -> None:
        """Prepare the library through the pilot if it needs it and is not prepared yet, then call ``then``."""
        stage = LibraryStage(self, self.stages, tasks, self.progress, self.rows, cores, partial(self._ready, then))
        if self.prepared and not stage.complete():
            stage.start()
        else:
            self._ready(then)

    def _ready(self, then: Callable[[], None]) -> None:
        self.size = self.store.counts().kept if self.prepared else self.rows
        if self.size == 0:
            raise RuntimeError(
                "the library preparation kept no compound: `impeccable library inspect` shows which rules removed them"
            )
        then()

    def records(self) -> Iterator[LibraryRecord]:
        if self.prepared:
            return itertools.starmap(LibraryRecord, self.store.records())
        return (LibraryRecord(rec.id, rec.smiles) for rec in raw_records(self.c))

    def batches(self, wanted: set[int]) -> Iterator[tuple[int, list[LibraryRecord]]]:
        """The inference batches numbered in ``wanted``, in library order."""
        for batch, chunk in enumerate(chunks(self.records(), self.c.infer.batch_size)):
            if batch in wanted:
                yield batch, chunk

    def seed_sample(self, chosen: list[tuple[str, str | None, float | None]]) -> list[LibraryRecord]:
        """A seeded sample (``library.seed_strategy``) of the screened compounds; once ``chosen`` (stored), always
        that one (read back from the store, or from the library for a store that kept only the ids)."""
        from .stages.seedsample import seed_sample

        if chosen and all(smiles for _, smiles, _ in chosen):
            return [LibraryRecord(cid, smiles) for cid, smiles, _ in chosen]  # type: ignore[arg-type]
        if chosen:
            ids = {cid for cid, _, _ in chosen}
            return [rec for rec in self.records() if rec.id in ids]
        return seed_sample(
            self.records(), self.c.dock.seed_sample, seed=self.c.campaign.seed, strategy=self.c.library.seed_strategy
        )


class LibraryStage:
    """Prepares the library through the pilot; calls ``on_done`` once every batch is committed."""

    def __init__(
        self,
        library: CampaignLibrary,
        stages: Any,
        tasks: Any,
        progress: CampaignProgress,
        rows: int,
        cores: int,
        on_done: Callable[[], None],
    ) -> None:
        self.lib = library
        self.stages = stages
        self.tasks = tasks
        self.progress = progress
        self.rows = rows
        self.limit = 4 * max(1, cores)
        self.on_done = on_done
        self.size = library.c.library.batch_size
        self.pending: dict[int, tuple[list[SourcedRecord], dict[str, Any] | str]] = {}
        self.inflight = 0
        self.exhausted = False

    def complete(self) -> bool:
        """Whether every batch is committed, for these settings and these files (else they are forgotten)."""
        library = self.lib.c.library.model_dump(mode="json", exclude={"seed_strategy"})
        self.lib.store.keep_only(
            json.dumps({"library": library, "scan": self.lib.store.store.get_meta("library_scan")}, sort_keys=True)
        )
        return self.lib.store.counts().rows >= self.rows

    def start(self) -> None:
        counts = self.lib.store.counts()
        self.next_commit = self.lib.store.done_batches()
        todo = itertools.islice(raw_records(self.lib.c), self.next_commit * self.size, None)
        self.batches = enumerate(chunks(todo, self.size), start=self.next_commit)
        self.progress.tick(STAGE, total=self.rows, done=counts.rows - counts.failed, failed=counts.failed)
        self._feed()
        self._maybe_done()

    def _feed(self) -> None:
        while self.inflight < self.limit:
            item = next(self.batches, None)
            if item is None:
                self.exhausted = True
                return
            index, records = item
            task = self.stages.preparation.task(index, [rec.smiles for rec in records], self.lib.settings)
            self.tasks.submit(task, partial(self._prepared, index, records))
            self.inflight += 1

    def _prepared(self, index: int, records: list[SourcedRecord], future: TaskFuture) -> None:
        self.inflight -= 1
        if self.tasks.failed_task(future, STAGE):
            if future.record.state is not TaskState.FAILED or self.tasks.draining:
                return  # canceled or stopping: prepared again on resume
            self.pending[index] = (records, f"library preparation task failed: {future.record.error}")
        else:
            self.pending[index] = (records, future.result())
        while self.next_commit in self.pending:
            batch = self._resolve(self.next_commit, *self.pending.pop(self.next_commit))
            self.lib.store.add_batch(batch)
            failed = batch.count("failed")
            self.progress.tick(STAGE, done=batch.rows - failed, failed=failed)
            self.next_commit += 1
        self._feed()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.exhausted and self.inflight == 0 and not self.pending and not self.tasks.draining:
            self.on_done()

    def _resolve(self, index: int, records: list[SourcedRecord], outcome: dict[str, Any] | str) -> PreparedBatch:
        """The batch's kept, failed, filtered and duplicate records; duplicates against every earlier batch."""
        batch = PreparedBatch(index, len(records))
        if isinstance(outcome, str):
            batch.dropped = [(rec.id, "failed", outcome) for rec in records]
            return batch
        failed = dict(outcome["failed"])
        filtered = {i: (rule, detail) for i, rule, detail in outcome["filtered"]}
        batch.seconds = outcome["seconds"]
        hashes = [key_hash(k) if k else 0 for k in outcome["keys"]]
        known = self.lib.store.known_keys(h for h in hashes if h)
        for i, rec in enumerate(records):
            if i in failed:
                batch.dropped.append((rec.id, "failed", failed[i]))
            elif i in filtered:
                rule, detail = filtered[i]
                batch.dropped.append((rec.id, "filtered", f"{rule} ({detail})"))
                batch.by_rule[rule] = batch.by_rule.get(rule, 0) + 1
            elif hashes[i] and hashes[i] in known:
                first = known[hashes[i]]
                batch.dropped.append((rec.id, "duplicate", f"same InChIKey {outcome['keys'][i]} as {first}"))
                batch.duplicates.append((first, rec.source, rec.source_id))
            else:
                batch.kept.append((rec.id, outcome["smiles"][i], rec.source, rec.source_id))
                if hashes[i]:
                    known[hashes[i]] = rec.id
                    batch.keys.append((hashes[i], rec.id))
        return batch


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Lists of ``size`` items (the last may be shorter), cut at C speed (itertools.batched is 3.12+)."""
    items = iter(items)
    return iter(lambda: list(itertools.islice(items, size)), [])
