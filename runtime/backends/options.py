"""Each backend's options, typed and checked before anything starts.

A campaign's ``[pilot.options.<backend>]`` table and ``Pilot(options={...})`` both go through
:func:`parse_options`: a value of the wrong type, out of range, or a key the backend does not read (a typo
such as ``pipline_s``) is refused with the backend and the key named, instead of being ignored. Only pydantic
is imported here, so the campaign file's checks do not import Flux or Dragon.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_SRUN_MAX_RUNNING = 16  # outstanding srun steps at once (a site may allow more, or fewer)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LocalOptions(_Options):
    mpiexec: str | None = None  # MPI launcher for MPI tasks (default: mpiexec or mpirun on PATH)
    function_workers: int | None = Field(default=None, ge=1)  # persistent function workers (default: its cores)
    pipeline_s: float = Field(default=0.002, ge=0)  # a busy worker is sent calls that last under this (s)...
    max_pipeline: int = Field(default=64, ge=1)  # ... at most this many at once
    max_running: int | None = Field(default=None, ge=1)  # executables at once (default: as the cores allow)
    preload: tuple[str, ...] = ()  # modules each function worker imports when it starts
    worker_start_timeout_s: float = Field(default=120, gt=0)  # seconds for the workers to start


class DragonOptions(_Options):
    launcher: str | None = None  # the `dragon` launcher (default: found beside this interpreter or on PATH)
    launcher_args: tuple[str, ...] | None = None  # e.g. ["-t", "tcp"] (default: $IMPECCABLE_DRAGON_LAUNCHER_ARGS)
    start_timeout_s: float = Field(default=120.0, gt=0)  # seconds for the Dragon runtime to start
    start_attempts: int = Field(default=1, ge=1)  # launches tried before the backend gives up
    pipeline_s: float = Field(default=0.02, ge=0)  # a busy worker is sent calls that last under this (s)...
    max_pipeline: int = Field(default=512, ge=1)  # ... at most this many at once
    queue_ahead: int = Field(default=1, ge=0)  # calls sent to a worker before it asks
    workers: int | None = Field(default=None, ge=1)  # default: one per core
    preload: tuple[str, ...] = ()  # modules each worker imports when it starts


class FluxOptions(_Options):
    use_existing: bool | None = None  # run in the Flux instance this process is in (default: if FLUX_URI is set)
    partitions: int | None = Field(default=None, ge=1)  # Flux instances over whole nodes (default 1)
    start_timeout_s: float = Field(default=60, gt=0)  # seconds for each Flux instance to start
    ahead: int | None = Field(default=None, ge=0, strict=True)  # jobs held ahead (default: cores, at most 64)
    validate_jobspec: bool = Field(default=False, alias="validate")  # Flux's own jobspec validation
    cpu_affinity: str = "off"  # flux-shell's cpu-affinity

    @model_validator(mode="before")
    @classmethod
    def _gone(cls, data: Any) -> Any:
        if isinstance(data, dict) and "test_size" in data:
            raise ValueError(
                "test_size is gone: each node of the allocation is one broker (emulate nodes on one machine "
                "with Allocation.emulated(cores, nodes=N) / --nodes N)"
            )
        return data


class SrunOptions(_Options):
    max_running: int = Field(default=DEFAULT_SRUN_MAX_RUNNING, ge=1)  # outstanding steps at once
    step_flags: tuple[str, ...] = ()  # extra srun flags for every step
    mpi: str | None = None  # srun --mpi= for MPI tasks
    workdir: str | None = None  # parent of the steps' scratch folders
    salloc_flags: tuple[str, ...] = ()  # outside a job: flags of the allocation the backend holds
    allocation_timeout_s: float = Field(default=300, gt=0)  # seconds to wait for that allocation


OPTIONS: dict[str, type[_Options]] = {
    "local": LocalOptions,
    "dragon": DragonOptions,
    "flux": FluxOptions,
    "srun": SrunOptions,
}


def parse_options(backend: str, options: Any, model: type[_Options] | None = None) -> Any:
    """``options`` as ``backend``'s typed options; ValueError naming the backend and each bad key."""
    model = model or OPTIONS.get(backend)
    if model is None:
        raise ValueError(f"options for unknown backend {backend!r}: choose one of {', '.join(OPTIONS)}")
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ValueError(f"backend {backend!r}: {_problems(exc, model)}") from None


def _problems(exc: ValidationError, model: type[_Options]) -> str:
    said, unknown = [], []
    for error in exc.errors():
        key, why = ".".join(str(part) for part in error["loc"]), error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            unknown.append(repr(key))
        else:
            said.append(f"option {key!r}: {why}" if key else why)
    if unknown:
        known = ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))
        said.append(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (it reads: {known})")
    return "; ".join(said)
