"""Fault injection: a campaign killed 20 times (SIGKILL, SIGTERM or Ctrl-C at seeded instants spread over every
stage) and resumed each time ends with the store of an uninterrupted run; nothing finished is lost or computed
again, and no process of the run outlives a kill by 2 s.

The manager is the real one (runner, task loop, store, local pilot, reaper); only the payloads are fast stand-ins
that write what the real stages write (:mod:`chaos_payloads`, :mod:`chaos_campaign`). Run alone:

    python -m pytest tests/test_chaos.py --slow -s        # CHAOS_SEED=N to draw other instants
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from impeccable.stagetasks import folder_name

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow
KILLS = 20

CAMPAIGN = """
[campaign]
name = "chaos"
seed = 11
rounds = 2
[receptor]
path = "{root}/data/receptors/4jsv"
[library]
path = "{root}/data/library/moses_20k.csv"
limit = 160
[dock]
seed_sample = 40
ligands_per_task = 4
[infer]
batch_size = 40
[redock]
top_k = 12
[md]
top_m = 3
replicas = 2
[pilot]
cores = 4
oversubscribe = true
[pilot.routes]
executable = "local"
function = "local"
[pilot.options.local]
preload = []
"""

# what must be equal to the uninterrupted run's, table by table
COMPARED = {
    "docking": "SELECT id, smiles, round, origin, score, pose_sdf, error, state_smiles FROM docking ORDER BY id",
    "predictions": "SELECT round, batch, ids, scores FROM prediction_batches ORDER BY round, batch",
    "inference": "SELECT * FROM inference_batches ORDER BY round, batch",
    "selections": "SELECT round, stage, id, batch, smiles, score FROM selections WHERE stage IN ('seed', 'redock') "
    "ORDER BY round, stage, id",
    "models": "SELECT round, report FROM models ORDER BY round",
    "failures": "SELECT id, stage, reason, category FROM failures ORDER BY id, stage",
}


class Run:
    """One run directory, its payload log, and the command that runs (or resumes) it."""

    def __init__(self, folder: Path, campaign: Path) -> None:
        self.folder = folder
        self.log = folder.parent / f"{folder.name}.log"
        self.tag = uuid.uuid4().hex  # in the environment of every process the run starts
        self.cmd = [sys.executable, str(TESTS / "chaos_campaign.py"), str(campaign), str(folder), str(self.log)]
        self.env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), CHAOS_TAG=self.tag
        )

    def start(self) -> subprocess.Popen:
        """A session of the run; its output goes to RUN.out (a pipe would wait for every process holding it)."""
        with open(self.folder.parent / f"{self.folder.name}.out", "a") as out:
            return subprocess.Popen(
                self.cmd, env=self.env, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return (self.folder.parent / f"{self.folder.name}.out").read_text()[-5000:]

    def events(self) -> list[tuple[str, str, str]]:
        """(start|done, kind, key) in the order the payloads logged them."""
        if not self.log.exists():
            return []
        return [tuple(line.split(" ", 2)) for line in self.log.read_text().splitlines()]  # type: ignore[misc]

    def query(self, sql: str) -> list[tuple]:
        path = self.folder / "campaign.db"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def committed(self) -> dict[str, set[str]]:
        """What the store holds, as the payload log names units of work."""
        return {
            "docked": {cid for (cid,) in self.query("SELECT id FROM docking")},
            "infer": {f"r{r}b{b}" for r, b in self.query("SELECT round, batch FROM inference_batches")},
            "train": {f"r{r}" for (r,) in self.query("SELECT round FROM models")},
            "md-combine": {folder_name(cid) for (cid,) in self.query("SELECT id FROM md")},
        }


def alive_with(tag: str) -> list[str]:
    """Processes (not zombies) whose environment holds CHAOS_TAG=tag: the command lines."""
    marker = f"CHAOS_TAG={tag}".encode()
    return [cmd for proc in Path("/proc").glob("[0-9]*") if (cmd := _tagged_command(proc, marker))]


def _tagged_command(proc: Path, marker: bytes) -> str:
    try:
        if marker not in (proc / "environ").read_bytes().split(b"\0"):
            return ""
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return ""
        return (proc / "cmdline").read_text().replace("\0", " ").strip() or f"pid {proc.name}"
    except OSError:
        return ""


def plan_kills(reference: list[tuple[str, str, str]], rng: random.Random) -> list[tuple[str, int, int, float, int]]:
    """(kind, n, total, delay, signal) per kill: strike ``delay`` s after the n-th unit of ``kind`` has started
    (or the ``total``-th distinct unit of any kind, if that comes first), the instants drawn one in each
    twentieth of the uninterrupted run's work, so that every stage is hit."""
    starts = [(kind, key) for event, kind, key in reference if event == "start"]
    starts = starts[: len(starts) * 17 // 20]  # the last units may not all come again in another run (speculative MD)
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT] * (KILLS // 3 + 1)
    rng.shuffle(signals)
    slices = [rng.randrange(i * len(starts) // KILLS, (i + 1) * len(starts) // KILLS) for i in range(KILLS)]
    for kind in dict.fromkeys(kind for kind, _ in starts):  # a stage too short to be drawn (training) is hit too
        if all(starts[at][0] != kind for at in slices):
            at = rng.choice([j for j, (k, _) in enumerate(starts) if k == kind])
            free = [i for i in range(KILLS) if sum(starts[a][0] == starts[slices[i]][0] for a in slices) > 1]
            slices[min(free, key=lambda i: abs(i - at * KILLS // len(starts)))] = at
    plan = []
    for i, at in enumerate(sorted(slices)):
        kind = starts[at][0]
        n = len({key for k, key in starts[: at + 1] if k == kind})
        plan.append((kind, n, at + 1, rng.uniform(0.0, 0.12), signals[i]))
    return plan


def started(events: list[tuple[str, str, str]], kind: str) -> int:
    return len({key for event, k, key in events if event == "start" and k == kind})


def strike(
    run: Run, kind: str, n: int, total: int, delay: float, sig: int, grace: float = 2.0
) -> tuple[int | None, float, str]:
    """One session of the run, killed with ``sig`` once the trigger is reached (or at its first new unit of
    work, if an earlier session went past the trigger), and no process of it alive ``grace`` s after the
    signal; returns (exit code, seconds, the kinds of work running when it struck), exit code None
    when the run finished before the trigger. The seconds are from the signal to the last process gone."""
    seen = len(run.events())
    proc = run.start()
    deadline = time.monotonic() + 120
    events = []
    while proc.poll() is None and time.monotonic() < deadline:
        events = run.events()
        units = len({(k, key) for event, k, key in events if event == "start"})  # a unit run again counts once
        if (started(events, kind) >= n or units >= total) and len(events) > seen:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        assert proc.returncode == 0, run.output()
        return None, 0.0, ""
    time.sleep(delay)
    state: dict[tuple[str, str], str] = {}
    for event, k, key in run.events()[seen:]:  # this session's work (a unit killed before may never come back)
        state[k, key] = event
    running = ",".join(sorted({k for (k, _), event in state.items() if event == "start"})) or "-"
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    else:
        os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    exited = time.monotonic() - sent
    assert proc.returncode in ((-signal.SIGKILL, 0) if sig == signal.SIGKILL else (130, 0)), run.output()
    assert exited <= grace, f"the manager took {exited:.2f} s to exit after {signal.Signals(sig).name}"
    left = alive_with(run.tag)
    while left and time.monotonic() < sent + grace:
        time.sleep(0.05)
        left = alive_with(run.tag)
    assert not left, f"alive {grace:g} s after {signal.Signals(sig).name} (exit after {exited:.2f} s): {left}"
    return proc.returncode, time.monotonic() - sent, running


def test_killed_twenty_times_ends_as_an_uninterrupted_run(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED", "26"))
    print(f"\nchaos seed {seed} (CHAOS_SEED={seed} draws the same instants)")
    campaign = tmp_path / "chaos.toml"
    campaign.write_text(CAMPAIGN.format(root=ROOT))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    reference = Run(tmp_path / "reference", campaign)
    assert reference.start().wait(timeout=300) == 0, reference.output()

    chaos = Run(tmp_path / "chaos", campaign)
    rng = random.Random(seed)
    hit: list[str] = []
    for kind, n, total, delay, sig in plan_kills(reference.events(), rng):
        before = chaos.committed()
        done_before = {
            (k, key)
            for event, k, key in chaos.events()
            if event == "done" and not k.startswith(("train", "infer", "md-combine"))
        }  # executables' results: on disk once logged done
        seen = len(chaos.events())
        code, gone, running = strike(chaos, kind, n, total, delay, sig)
        if code is None:
            break  # the run finished before this trigger
        hit.append(
            f"{signal.Signals(sig).name} during {running} (trigger {kind} #{n}, +{delay:.2f} s): "
            f"exit {code}, every process gone in {gone:.2f} s"
        )
        new = chaos.events()[seen:]
        # nothing committed before this session, and no executable's finished output, was computed again
        for event, k, key in new:
            if event != "start":
                continue
            assert (k, key) not in done_before, f"{k} {key} finished before, yet ran again ({hit[-1]})"
            assert not (k.startswith("dock") and key in before["docked"]), f"{key} was docked and stored, yet re-docked"
            assert k not in ("infer", "train", "md-combine") or key not in before[k], f"{k} {key} was committed"
        if sig != signal.SIGKILL and code == 130:  # a graceful stop stores every compound its ranks finished
            finished = {key for event, k, key in new if event == "done" and k.startswith("dock")}
            assert finished <= chaos.committed()["docked"], (
                f"finished on disk, not stored: {finished - chaos.committed()['docked']}"
            )
    print("\n".join(hit))
    assert len(hit) == KILLS, hit

    assert chaos.start().wait(timeout=300) == 0, chaos.output()
    for table, sql in COMPARED.items():
        assert chaos.query(sql) == reference.query(sql), f"{table} differs from the uninterrupted run"
    ref_md, chaos_md = (
        dict((r[0], r) for r in reference.query("SELECT * FROM md")),
        dict((r[0], r) for r in chaos.query("SELECT * FROM md")),
    )
    final_top = {
        cid for (cid,) in reference.query("SELECT id FROM docking WHERE score IS NOT NULL ORDER BY score, id LIMIT 3")
    }
    assert final_top <= set(chaos_md), "a compound of the final top-M has no MD"
    differ = {cid: (chaos_md[cid], ref_md[cid]) for cid in set(chaos_md) & set(ref_md) if chaos_md[cid] != ref_md[cid]}
    for cid, (ours, theirs) in differ.items():
        print(f"{cid}\n  chaos:     {ours}\n  reference: {theirs}")
    assert not differ, sorted(differ)
    kinds = {k for line in hit for k in line.split(" during ")[1].split(" ")[0].split(",")}
    assert {"dock-seed", "train", "infer", "dock-redock", "md-prepare", "md-replica", "md-combine"} <= kinds, kinds
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"CPU: {cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime:.0f} s for the reference, "
        f"{len(hit)} kills and the final resume"
    )


@pytest.mark.dragon
def test_kill_9_on_the_dragon_route_leaves_nothing_and_resumes_exactly(tmp_path):
    """Function tasks (training, inference, MD combine) on Dragon: the manager killed with SIGKILL in each of
    those stages; the Dragon runtime must go away (its server sees the pilot's socket close) and the resumed
    runs must end with the uninterrupted run's store. Not run on the development machine (shared: Dragon
    tests are the lead's), so the time Dragon takes to go away is printed, and allowed up to 30 s."""
    pytest.importorskip("dragon", reason="dragonhpc not installed (pip install 'impeccable[dragon]')")
    from impeccable.runtime.backends.dragon.backend import DragonBackend

    ok, why = DragonBackend.available()
    if not ok:
        pytest.skip(why or "dragon backend unavailable")
    local = tmp_path / "local.toml"
    local.write_text(CAMPAIGN.format(root=ROOT))
    on_dragon = tmp_path / "dragon.toml"
    on_dragon.write_text(
        CAMPAIGN.format(root=ROOT).replace('function = "local"', 'function = "dragon"')
        + "[pilot.options.dragon]\npreload = []\n"
    )
    reference = Run(tmp_path / "reference", local)
    assert reference.start().wait(timeout=300) == 0, reference.output()
    chaos = Run(tmp_path / "chaos", on_dragon)
    for kind, n in (("train", 1), ("infer", 3), ("md-combine", 1), ("infer", 6)):
        code, gone, running = strike(chaos, kind, n, 10**6, 0.1, signal.SIGKILL, grace=30.0)
        if code is None:
            break
        print(f"SIGKILL during {running}: every process of the run (Dragon's included) gone in {gone:.1f} s")
    assert chaos.start().wait(timeout=600) == 0, chaos.output()
    for table, sql in COMPARED.items():
        assert chaos.query(sql) == reference.query(sql), f"{table} differs from the uninterrupted run"
