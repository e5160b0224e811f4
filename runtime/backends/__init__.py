"""Backends by name. Each lives in its own module and is imported only when asked for,
so that a pilot using ``local`` never imports Flux or Dragon bindings."""

from __future__ import annotations

import importlib

from .base import Backend, Submission, TaskFuture

# the one list of backend names: the CLI's and campaign files' choices come from here ("auto" aside)
_REGISTRY: dict[str, str] = {
    "local": "impeccable.runtime.backends.local:LocalBackend",
    "flux": "impeccable.runtime.backends.flux.backend:FluxBackend",
    "dragon": "impeccable.runtime.backends.dragon.backend:DragonBackend",
    "srun": "impeccable.runtime.backends.slurm.srun:SrunBackend",
}


BACKEND_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def names() -> list[str]:
    return list(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``; ValueError listing the known names otherwise."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(_REGISTRY)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def is_available(name: str) -> tuple[bool, str]:
    """(True, "") if backend ``name`` can run on this machine, else (False, why)."""
    try:
        cls = backend_class(name)
    except ImportError as exc:
        return False, f"backend {name!r} cannot be imported: {exc}"
    return cls.available()


__all__ = ["BACKEND_NAMES", "Backend", "Submission", "TaskFuture", "backend_class", "is_available", "names"]
