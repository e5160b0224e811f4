"""Re-state the reference set: new ligand states (pKasso + penalties), docking only the states that are new.

    nohup nice -n 19 .venv/bin/python data/restate_reference.py --workers 2 > restate.log 2>&1 &

The reference set was docked with the states of ``stages/ligands.py`` at commit
1aea90a (dimorphite-dl's variants, no penalties): ``scores/4jsv_vina_states_dimorphite.csv``.
For each of its compounds, in its order, this script enumerates the current
states (``ligands.scored_states``), takes the Vina score of every state that
was docked before from that file (the old enumeration, read from git, says
which score belongs to which state; the same state SMILES, embedding seed, Vina
seed and exhaustiveness give the same score), docks only the states that are
new, and writes the compound with the columns of ``dock_sample.py`` to
``scores/4jsv_vina_states.csv``: its score is the best state's Vina score plus
that state's penalty. Resumable like ``dock_sample.py``: rows are appended and
flushed one at a time in the old file's order; ids already written are skipped.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA.parent))
sys.path.insert(0, str(DATA))

from dock_sample import COLUMNS, RECEPTOR, _appender, _ids  # noqa: E402

from impeccable.stages.dock import DEFAULT_DOCK_SEED, Docker  # noqa: E402
from impeccable.stages.ligands import StateOptions, prepare_state, scored_states  # noqa: E402
from impeccable.stages.receptor import load_receptor  # noqa: E402

OLD = DATA / "scores" / "4jsv_vina_states_dimorphite.csv"
NEW = DATA / "scores" / "4jsv_vina_states.csv"
OLD_COMMIT = "1aea90a"  # the last commit whose stages/ligands.py made the states of OLD


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, help="only the first N compounds of the old file")
    p.add_argument("--summary", action="store_true", help="compare the two files on the compounds both have")
    a = p.parse_args(argv)
    if a.summary:
        return summary()
    with open(OLD, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[: a.limit]
    done = _ids(NEW)
    todo = [r for r in rows if r["id"] not in done]
    print(f"{len(done)} already re-stated, {len(todo)} to go -> {NEW}", flush=True)
    if not todo:
        return 0
    old_source = subprocess.run(
        ["git", "-C", str(DATA.parent), "show", f"{OLD_COMMIT}:stages/ligands.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    ctx = multiprocessing.get_context("spawn")
    t0, anew, same = time.perf_counter(), 0, 0
    with _appender(NEW, COLUMNS) as out, ctx.Pool(a.workers, initializer=_start, initargs=(old_source,)) as pool:
        for i, (_row, result) in enumerate(zip(todo, pool.imap(_restate, todo, chunksize=1)), start=1):
            out.writerow(result["row"])
            anew += result["docked_anew"]
            same += result["docked_anew"] == 0
            if i % 25 == 0 or i == len(todo):
                dt = time.perf_counter() - t0
                print(
                    f"{i}/{len(todo)} re-stated ({same} without new docking, {anew} states docked anew), "
                    f"{dt / i:.2f} s/compound",
                    flush=True,
                )
    return 0


def summary() -> int:
    """Before and after on the compounds re-stated so far: best states with |charge| >= 2, phenolates."""
    from rdkit import Chem

    phenolate = Chem.MolFromSmarts("[OX1-]-c")
    new = {r["id"]: r for r in csv.DictReader(open(NEW, newline="", encoding="utf-8"))}
    old = [r for r in csv.DictReader(open(OLD, newline="", encoding="utf-8")) if r["id"] in new]
    for label, rows in (
        ("before (dimorphite-dl, no penalty)", old),
        ("after (pKasso + rules, penalties)", [new[r["id"]] for r in old]),
    ):
        mols = [Chem.MolFromSmiles(r["state_smiles"]) for r in rows]
        ranked = sorted(range(len(rows)), key=lambda i: float(rows[i]["score_kcal_mol"]))
        top = set(ranked[: max(1, round(0.01 * len(rows)))])
        dications = [i for i, m in enumerate(mols) if abs(Chem.GetFormalCharge(m)) >= 2]
        phenolates = [i for i, m in enumerate(mols) if m.HasSubstructMatch(phenolate)]
        print(
            f"{label}: {len(rows)} compounds; best state |q| >= 2: {len(dications)} "
            f"({len(top & set(dications))} in the top 1 %); phenolates: {len(phenolates)} "
            f"({len(top & set(phenolates))} in the top 1 %, {len(top)} compounds)"
        )
    changed = sum(new[r["id"]]["state_smiles"] != r["state_smiles"] for r in old)
    print(f"best state changed for {changed} of {len(old)} compounds")
    before = [float(r["score_kcal_mol"]) for r in old]
    after = [float(new[r["id"]]["score_kcal_mol"]) for r in old]
    rho = _spearman(before, after)
    shift = sum(a - b for a, b in zip(after, before)) / len(old)
    print(f"compound scores, after against before: Spearman {rho:.3f}, mean shift {shift:+.3f} kcal/mol")
    minor = sum(_best_penalty(new[r["id"]]) > 0 for r in old)
    print(f"{minor} compounds score as a penalised minor microstate")
    return 0


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _best_penalty(row: dict[str, str]) -> float:
    """The penalty of the state that gave the compound its score (lowest Vina score + penalty)."""
    scores = [float(v) for v in row["state_scores_kcal_mol"].split(";") if v]
    penalties = [float(v) for v in row["state_penalties_kcal_mol"].split(";") if v]
    return min(zip((s + p for s, p in zip(scores, penalties)), penalties))[1]


_docker: Docker | None = None
_old = None


def _start(old_source: str) -> None:
    """A worker: the receptor's maps, and the old ligand-state module loaded from git's copy."""
    global _docker, _old
    _docker = Docker(load_receptor(RECEPTOR), seed=DEFAULT_DOCK_SEED, cpu=1)
    spec = importlib.util.spec_from_loader("impeccable.stages._ligands_old", loader=None)
    _old = importlib.util.module_from_spec(spec)
    _old.__package__ = "impeccable.stages"
    sys.modules[spec.name] = _old  # its dataclasses look their module up
    exec(compile(old_source, f"{OLD_COMMIT}:stages/ligands.py", "exec"), _old.__dict__)


def _restate(row: dict[str, str]) -> dict[str, object]:
    assert _docker is not None and _old is not None
    exhaustiveness = int(row["exhaustiveness"])
    old_states = _old.enumerate_states(row["smiles"], _old.StateOptions())
    old_scores = [float(x) for x in row["state_scores_kcal_mol"].split(";") if x]
    known = dict(zip(old_states, old_scores)) if len(old_states) == len(old_scores) else {}
    states = scored_states(row["smiles"], StateOptions())
    kept, scores, penalties, anew = [], [], [], 0
    for state, penalty in states:
        if state in known:
            scores.append(known[state])
        else:
            prepared = prepare_state(row["id"], row["smiles"], state, penalty_kcal_mol=penalty)
            try:
                scores.append(_docker.dock_prepared(prepared, exhaustiveness=exhaustiveness)[0])  # type: ignore[index]
            except Exception:  # a state that cannot be embedded or docked is left out, as in Docker.dock
                continue
            anew += 1
        kept.append(state)
        penalties.append(penalty)
    if not scores:  # nothing new could be docked: keep the old row's best state, unpenalised
        kept, scores, penalties = [row["state_smiles"]], [float(row["score_kcal_mol"])], [0.0]
    best = min(range(len(scores)), key=lambda k: scores[k] + penalties[k])
    return {
        "docked_anew": anew,
        "row": [
            row["id"],
            row["smiles"],
            kept[best],
            f"{scores[best] + penalties[best]:.3f}",
            len(scores),
            ";".join(f"{x:.3f}" for x in scores),
            ";".join(f"{x:.3f}" for x in penalties),
            exhaustiveness,
            row["seed"],
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
