"""The docking surrogate: Morgan count fingerprints to a small torch MLP predicting the Vina score.

Why this model: IMPECCABLE's surrogate only has to rank a library so that
re-docking spends its budget on likely binders; fingerprint MLPs do that well,
train in seconds on a few hundred to a few thousand scores, and infer at
thousands of molecules per second per core, so inference over a library is
cheap next to docking.

    python -m impeccable.stages.surrogate train --scores scores.csv --model model.pt
    python -m impeccable.stages.surrogate infer --model model.pt --library lib.csv --out preds.csv
    python -m impeccable.stages.surrogate bench --model model.pt --library lib.csv --n 20000
    python -m impeccable.stages.surrogate curve --scores data/scores/4jsv_vina_sample.csv --sizes 100,200,400

``predict`` is meant to be called many times in one persistent worker (a
function task): the model is loaded once per process and reused.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StageInputError
from .features import FingerprintSettings, SparseFeatures, featurise, featurise_sparse

__all__ = [
    "Fitted",
    "fit",
    "train",
    "nominate",
    "nominate_batch",
    "predict",
    "predict_scores",
    "benchmark_inference",
    "learning_curve",
    "main",
]


def _torch() -> Any:
    import torch

    return torch


def _build(n_in: int, hidden: Sequence[int], dropout: float) -> Any:
    nn = _torch().nn
    layers: list[Any] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@dataclass
class Fitted:
    """A trained surrogate in memory: predict on feature rows; ``report`` says how it was trained."""

    model: Any
    mean: float
    std: float
    report: dict[str, Any]

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = _torch()
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).squeeze(1).numpy() * self.std + self.mean


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 60,
    seed: int = 0,
    val_fraction: float = 0.2,
    hidden: Sequence[int] = (512, 128),
    dropout: float = 0.1,
    lr: float = 1e-3,
    device: Any = None,
) -> Fitted:
    """Train on feature rows ``x`` and scores ``y``; keep the epoch with the best RMSE on a validation split.

    The validation split (``val_fraction`` of the rows given, seeded) is carved out of what is passed
    in, so a caller evaluating on other compounds never lets them pick the epoch. ``device`` (a torch
    device, default the CPU) holds the model and the rows while training; the fitted model is on the CPU.
    The same seed gives the same model on one device; a GPU's kernels (and its dropout draws) differ from
    the CPU's, so models trained on different devices differ slightly.
    """
    torch = _torch()
    device = device or torch.device("cpu")
    t0 = time.perf_counter()
    if not np.all(np.isfinite(y)):
        raise StageInputError("training scores contain NaN or infinite values")
    if not 0 < val_fraction < 1:
        raise StageInputError(f"val_fraction: must be between 0 and 1, got {val_fraction}")
    if len(y) < 8:
        raise StageInputError(f"need at least 8 parsable (smiles, score) pairs to train, got {len(y)}")
    y = y.astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = max(2, int(round(val_fraction * len(y))))
    val, tr = order[:n_val], order[n_val:]
    mean, std = float(y[tr].mean()), float(y[tr].std() or 1.0)
    torch.manual_seed(seed)
    model = _build(x.shape[1], hidden, dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    xt, yt = torch.from_numpy(x[tr]).to(device), torch.from_numpy((y[tr] - mean) / std).to(device)
    xv = torch.from_numpy(x[val]).to(device)
    best = (math.inf, None, 0)
    batch = 64
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), batch):
            idx = perm[i : i + batch].to(device)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pv = model(xv).squeeze(1).cpu().numpy() * std + mean
        rmse = float(np.sqrt(np.mean((pv - y[val]) ** 2)))
        if rmse < best[0]:
            best = (rmse, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    model.load_state_dict(best[1])
    model.eval()
    fitted = Fitted(model.cpu(), mean, std, {})
    pv = fitted.predict(x[val])
    fitted.report = {
        "n_train": int(len(tr)),
        "n_val": int(n_val),
        "epochs": epochs,
        "best_epoch": best[2],
        "val_spearman": _spearman(pv, y[val]),
        "val_rmse": best[0],
        "baseline_rmse": float(np.sqrt(np.mean((mean - y[val]) ** 2))),
        "seconds": time.perf_counter() - t0,
    }
    return fitted


def train(
    records: Sequence[tuple[str, float]],
    model_path: str | os.PathLike[str],
    *,
    epochs: int = 60,
    seed: int = 0,
    val_fraction: float = 0.2,
    threads: int | None = None,
    hidden: Sequence[int] = (512, 128),
    dropout: float = 0.1,
    lr: float = 1e-3,
    features: FingerprintSettings = FingerprintSettings(),
) -> dict[str, Any]:
    """Featurise (smiles, score) pairs, :func:`fit`, save atomically; return the training report.

    Report: n_train, n_val, val_spearman and val_rmse (on the split that picked the epoch, so
    optimistic), baseline_rmse (predicting the training mean), seconds, device (the GPU this task holds,
    else the CPU) and device_note (why a GPU it holds was not used).
    """
    from .device import device_label, torch_device

    torch = _torch()
    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    device, note = torch_device(torch)
    if not 0 < val_fraction < 1:
        raise StageInputError(f"val_fraction: must be between 0 and 1, got {val_fraction}")
    x, valid = featurise([s for s, _ in records], features)
    y = np.array([float(v) for _, v in records], dtype=np.float32)
    if not np.all(np.isfinite(y)):
        raise StageInputError("training scores contain NaN or infinite values")
    fitted = fit(
        x[valid],
        y[valid],
        epochs=epochs,
        seed=seed,
        val_fraction=val_fraction,
        hidden=hidden,
        dropout=dropout,
        lr=lr,
        device=device,
    )
    report = {
        **fitted.report,
        "n_invalid_smiles": int((~valid).sum()),
        "seconds": time.perf_counter() - t0,
        "device": device_label(torch, device),
        "device_note": note,
    }
    payload = {
        "state_dict": fitted.model.state_dict(),
        "hidden": list(hidden),
        "dropout": dropout,
        "mean": fitted.mean,
        "std": fitted.std,
        "features": features.to_dict(),
        "report": report,
    }
    _save_atomic(torch, payload, Path(model_path))
    return report


def nominate(scored: Iterable[tuple[str, float]], docked: Container[str], k: int) -> list[str]:
    """The campaign's pick: the ``k`` best-predicted (lowest score) compounds not docked yet, ties by id."""
    return [cid for cid, _ in sorted((s for s in scored if s[0] not in docked), key=lambda s: (s[1], s[0]))][:k]


def nominate_batch(ids: Sequence[str], scores: np.ndarray, docked: Container[str], k: int) -> list[int]:
    """:func:`nominate` over one inference batch's arrays (NaN: not scored): the positions it picks, in order.

    Only the best-scored prefix that can hold the pick (k compounds not docked, plus every tie of the
    last) goes through Python; the rest of the batch is ordered by numpy.
    """
    if k <= 0:
        return []
    scored = np.flatnonzero(~np.isnan(scores))
    order = scored[np.argsort(scores[scored], kind="stable")]
    end, fresh = 0, 0
    while end < len(order) and fresh < k:
        fresh += ids[order[end]] not in docked
        end += 1
    if end:
        last = scores[order[end - 1]]
        while end < len(order) and scores[order[end]] == last:
            end += 1
    position = {ids[p]: int(p) for p in order[:end]}
    return [position[cid] for cid in nominate(((ids[p], float(scores[p])) for p in order[:end]), docked, k)]


_loaded: dict[tuple[str, float], tuple[Any, dict[str, Any]]] = {}


def _load(model_path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    path = Path(model_path)
    if not path.is_file():
        raise StageInputError(f"{path}: surrogate model not found")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _loaded:
        torch = _torch()
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise StageInputError(f"{path}: not a surrogate model saved by this stage ({exc})") from None
        try:
            payload["features"] = FingerprintSettings.from_dict(payload["features"])
            model = _build(payload["features"].n_bits, payload["hidden"], payload["dropout"])
        except (KeyError, TypeError) as exc:
            raise StageInputError(f"{path}: surrogate model file lacks metadata ({exc})") from None
        model.load_state_dict(payload["state_dict"])
        model.eval()
        _loaded.clear()  # one model per worker at a time: a new round replaces the old one
        _loaded[key] = (model, payload)
    return _loaded[key]


def predict(
    model_path: str | os.PathLike[str], records: Sequence[tuple[str, str]], threads: int | None = 1
) -> list[tuple[str, float | None]]:
    """Predicted score for each (id, smiles); None where the SMILES cannot be parsed."""
    scores = predict_scores(model_path, [s for _, s in records], threads=threads)
    return [(cid, None if np.isnan(v) else float(v)) for (cid, _), v in zip(records, scores)]


def predict_scores(model_path: str | os.PathLike[str], smiles: Sequence[str], threads: int | None = 1) -> np.ndarray:
    """Predicted scores (float32, NaN where a SMILES cannot be parsed), from sparse fingerprint rows, on the CPU."""
    return predict_timed(model_path, smiles, threads)[0]


def predict_timed(
    model_path: str | os.PathLike[str], smiles: Sequence[str], threads: int | None = 1, device: Any = None
) -> tuple[np.ndarray, dict[str, float]]:
    """:func:`predict_scores` on ``device`` (default the CPU), with the seconds spent featurising (CPU),
    moving rows to the device and scores back (``transfer_s``), and in the model (``model_s``).

    On a GPU the model stays resident in this process between calls (one copy per device), so a
    persistent worker pays its transfer once per model, not once per batch.
    """
    torch = _torch()
    if threads:
        torch.set_num_threads(threads)
    model, meta = _load(model_path)
    device = device or torch.device("cpu")
    t0 = time.perf_counter()
    features = featurise_sparse(smiles, meta["features"])
    t1 = time.perf_counter()
    rows = _csr_tensors(torch, features)
    if device.type == "cpu":
        with torch.inference_mode():
            out = _forward_sparse(torch, model, *rows).numpy()
        t2 = t1
        t3 = t4 = time.perf_counter()
    else:
        model = _resident(model, model_path, device)
        rows = [a.to(device) for a in rows]
        torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        with torch.inference_mode():
            raw = _forward_sparse(torch, model, *rows)
        torch.cuda.synchronize(device)
        t3 = time.perf_counter()
        out = raw.cpu().numpy()
        t4 = time.perf_counter()
    out = out * np.float32(meta["std"]) + np.float32(meta["mean"])
    out[~features.valid] = np.nan
    seconds = {"featurise_s": t1 - t0, "transfer_s": (t2 - t1) + (t4 - t3), "model_s": t3 - t2}
    return out.astype(np.float32, copy=False), seconds


_on_device: dict[tuple[str, str], Any] = {}


def _resident(model: Any, model_path: str | os.PathLike[str], device: Any) -> Any:
    """This process's copy of the loaded model on ``device`` (made once; a new model replaces the old)."""
    import copy

    key = (str(Path(model_path).resolve()), str(device))
    if key not in _on_device:
        if any(k[0] != key[0] for k in _on_device):
            _on_device.clear()
        _on_device[key] = copy.deepcopy(model).to(device)
    return _on_device[key]


def _csr_tensors(torch: Any, features: SparseFeatures) -> list[Any]:
    """The arguments of :func:`_forward_sparse` for ``features``, as CPU tensors (no copy)."""
    return [torch.from_numpy(a) for a in (features.indices, features.indptr[:-1], features.values)]


def _forward_sparse(torch: Any, model: Any, indices: Any, offsets: Any, values: Any) -> Any:
    """The model on CSR rows (tensors on the model's device: columns, row starts, values): the first layer as
    a weighted sum of the weight rows of each row's non-zero columns (``embedding_bag``), ~50x fewer
    multiply-adds than the dense product; then the other layers."""
    first = model[0]
    hidden = (
        torch.nn.functional.embedding_bag(indices, _transposed(first), offsets, mode="sum", per_sample_weights=values)
        + first.bias
    )
    return model[1:](hidden).squeeze(1)


def _transposed(layer: Any) -> Any:
    """The first layer's weight as [n_bits, hidden] (one embedding row per column), made once per model."""
    cached = getattr(layer, "_impeccable_rows", None)
    if cached is None:
        cached = layer.weight.detach().t().contiguous()
        layer._impeccable_rows = cached
    return cached


def _batches(path: Path, size: int) -> Iterator[list[tuple[str, str]]]:
    from .library import read_library

    batch: list[tuple[str, str]] = []
    for record in read_library(path):
        batch.append((record.id, record.smiles))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def benchmark_inference(
    model_path: str | os.PathLike[str], library: str | os.PathLike[str], n: int = 20000, batch: int = 2048
) -> dict[str, Any]:
    """Molecules/s on one core, featurisation and inference together (the model load is excluded)."""
    _load(model_path)
    done, t0 = 0, time.perf_counter()
    for chunk in _batches(Path(library), batch):
        chunk = chunk[: n - done]
        predict(model_path, chunk, threads=1)
        done += len(chunk)
        if done >= n:
            break
    seconds = time.perf_counter() - t0
    return {"molecules": done, "seconds": seconds, "mol_per_s": done / seconds if seconds else float("nan")}


def learning_curve(
    records: Sequence[tuple[str, float]], sizes: Sequence[int], *, n_test: int = 100, epochs: int = 40, seed: int = 0
) -> list[dict[str, Any]]:
    """Spearman and RMSE on the last ``n_test`` records (never trained on, nor used to pick an epoch)
    for models trained on the first n of the rest, for each n in ``sizes``.

    Records in file order are a random sample (data/dock_sample.py), so prefixes are fair subsets.
    """
    if len(records) < n_test + 10:
        raise StageInputError(f"learning curve: need more than {n_test + 10} scores, got {len(records)}")
    test, pool = records[-n_test:], records[:-n_test]
    y = np.array([v for _, v in test])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        for n in sorted({min(n, len(pool)) for n in sizes}):
            report = train(pool[:n], model, epochs=epochs, seed=seed, threads=1)
            pred = predict(model, [(str(i), s) for i, (s, _) in enumerate(test)])
            ok = np.array([v is not None for _, v in pred])
            p = np.array([v for _, v in pred if v is not None])
            mean = float(np.mean([v for _, v in pool[:n]]))
            rmse = float(np.sqrt(np.mean((p - y[ok]) ** 2)))
            rows.append(
                {
                    "n": n,
                    "test_spearman": _spearman(p, y[ok]),
                    "test_rmse": rmse,
                    "baseline_rmse": float(np.sqrt(np.mean((mean - y[ok]) ** 2))),
                    "n_test": int(ok.sum()),
                    "train_seconds": report["seconds"],
                }
            )
    return rows


def _read_scores(path: Path) -> list[tuple[str, float]]:
    if not path.is_file():
        raise StageInputError(f"{path}: scores file not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        column = next((c for c in ("score_kcal_mol", "score") if c in (reader.fieldnames or [])), None)
        if column is None or "smiles" not in (reader.fieldnames or []):
            raise StageInputError(f"{path}: needs columns 'smiles' and 'score_kcal_mol' (or 'score')")
        out = []
        for line, row in enumerate(reader, start=2):
            try:
                out.append((row["smiles"], float(row[column])))
            except ValueError:
                raise StageInputError(f"{path}, line {line}: {column} {row[column]!r} is not a number") from None
    return out


def _save_atomic(torch: Any, payload: dict[str, Any], path: Path) -> None:
    """Serialise in memory, then write atomically: a full disk says "disk full" and names the file
    (torch.save on a full disk raises an unhelpful "unexpected pos" error)."""
    from ..fileio import write_atomic

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.surrogate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--scores", required=True, type=Path, help="CSV with smiles and score_kcal_mol columns")
    t.add_argument("--model", required=True, type=Path)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    i = sub.add_parser("infer")
    i.add_argument("--model", required=True, type=Path)
    i.add_argument("--library", required=True, type=Path)
    i.add_argument("--out", required=True, type=Path)
    i.add_argument("--batch", type=int, default=2048)
    c = sub.add_parser("curve", help="test Spearman vs training-set size on held-out scores")
    c.add_argument("--scores", required=True, type=Path)
    c.add_argument("--sizes", default="100,200,400,800,1600,3200")
    c.add_argument("--n-test", type=int, default=100)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True, type=Path)
    b.add_argument("--library", required=True, type=Path)
    b.add_argument("--n", type=int, default=20000)
    a = p.parse_args(argv)
    try:
        if a.command == "train":
            report = train(_read_scores(a.scores), a.model, epochs=a.epochs, seed=a.seed, threads=a.threads)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()))
        elif a.command == "infer":
            _load(a.model)  # a bad model fails before any output is written
            a.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = a.out.with_name(f".{a.out.name}.tmp")
            n = 0
            try:
                with open(tmp, "w", newline="") as fh:
                    writer = csv.writer(fh, lineterminator="\n")
                    writer.writerow(["id", "predicted_score_kcal_mol"])
                    for chunk in _batches(a.library, a.batch):
                        for cid, value in predict(a.model, chunk):
                            writer.writerow([cid, "" if value is None else f"{value:.3f}"])
                            n += 1
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, a.out)
            finally:
                tmp.unlink(missing_ok=True)
            print(f"scored {n} compounds -> {a.out}")
        elif a.command == "curve":
            sizes = [int(x) for x in a.sizes.split(",")]
            for row in learning_curve(_read_scores(a.scores), sizes, n_test=a.n_test):
                print(
                    f"n={row['n']:5d} test Spearman {row['test_spearman']:.3f}  RMSE {row['test_rmse']:.3f} "
                    f"(predict-the-mean {row['baseline_rmse']:.3f}) on {row['n_test']} held-out compounds"
                )
        else:
            result = benchmark_inference(a.model, a.library, a.n)
            print(
                f"{result['molecules']} molecules in {result['seconds']:.2f} s: {result['mol_per_s']:,.0f} mol/s "
                "(one core, featurisation + inference)"
            )
    except StageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
