"""Task descriptions: what to run and how much of the allocation it needs.

A task is data, validated once when it is built. Two kinds exist, as in
RADICAL-Pilot and psij: an *executable* (argv, maybe MPI) and a *function*
(an importable callable plus its arguments). Both carry a timeout, a retry
budget and free-form tags (stage name, campaign id) that flow into records.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import TaskError
from .records import TaskRecord


class TaskKind(str, enum.Enum):
    EXECUTABLE = "executable"
    FUNCTION = "function"


_uids = itertools.count()
_PID = os.getpid()


def _next_uid() -> str:
    return f"task.{next(_uids):06d}"


class Task(BaseModel):
    """One unit of work. Build with :func:`executable_task` or :func:`function_task`."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    uid: str = Field(default_factory=_next_uid)
    name: str = ""
    kind: TaskKind
    # executable tasks
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    mpi: bool = False
    # function tasks: "module:qualname", positional and keyword arguments
    function: str = ""
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = Field(default_factory=dict)
    # resources
    ranks: int = Field(default=1, ge=1)
    cores_per_rank: int = Field(default=1, ge=1)
    gpus_per_rank: int = Field(default=0, ge=0)
    # policy
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0)
    tags: Mapping[str, str] = Field(default_factory=dict)
    partition: str | None = None

    @field_validator("argv")
    @classmethod
    def _argv_not_blank(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if argv and not argv[0]:
            raise ValueError("argv[0] (the program) is empty")
        return argv

    @model_validator(mode="after")
    def _kind_matches_fields(self) -> Task:
        if self.kind is TaskKind.EXECUTABLE:
            if not self.argv:
                raise ValueError("an executable task needs a non-empty argv")
            if self.function:
                raise ValueError("an executable task cannot also name a function")
        else:
            if not self.function or ":" not in self.function:
                raise ValueError("a function task needs function='module:qualname'")
            if self.argv:
                raise ValueError("a function task cannot also have an argv")
            if self.ranks != 1:
                raise ValueError("a function task runs as one process: ranks must be 1")
        return self

    @property
    def cores(self) -> int:
        return self.ranks * self.cores_per_rank

    @property
    def gpus(self) -> int:
        return self.ranks * self.gpus_per_rank

    @property
    def label(self) -> str:
        """How messages name this task: its name if it has one, with its uid."""
        return f"{self.name!r} ({self.uid})" if self.name else self.uid

    def new_record(self, submitted: float, backend: str) -> TaskRecord:
        """Its record as a pilot (or a model of one) takes it for ``backend``."""
        return TaskRecord(
            uid=self.uid,
            name=self.name,
            kind=self.kind.value,
            cores=self.cores,
            gpus=self.gpus,
            tags=dict(self.tags),
            submitted=submitted,
            backend=backend,
        )


def executable_task(argv: Sequence[str] | str, **fields: Any) -> Task:
    """An executable (or MPI, with ``mpi=True, ranks=N``) task; ``argv`` may be a list or one program name."""
    if isinstance(argv, str):
        argv = [argv]
    return _build(kind=TaskKind.EXECUTABLE, argv=tuple(str(a) for a in argv), **fields)


def function_task(fn: Callable[..., Any] | str, *args: Any, **fields: Any) -> Task:
    """A Python function task. ``fn`` is a module-level callable or a ``"module:qualname"`` string.

    Keyword arguments for the function go in ``kwargs={...}``; the other keywords
    are task fields (``name``, ``timeout_s``, ``retries``, ``tags`` ...).
    """
    return _build(kind=TaskKind.FUNCTION, function=function_reference(fn), args=tuple(args), **fields)


def _build(**fields: Any) -> Task:
    name = fields.get("name") or fields.get("uid") or "<unnamed task>"
    try:
        return Task(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'task'}: {err['msg']}" for err in exc.errors())
        raise TaskError(f"task {name!r} is invalid: {problems}") from None


def function_reference(fn: Callable[..., Any] | str) -> str:
    """``"module:qualname"`` for a callable, so that a worker in another process can import it."""
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TaskError(
            f"function {fn!r} is not importable by name (lambdas, closures and nested "
            "functions cannot run in another process): define it at module level"
        )
    if module == "__main__":
        raise TaskError(
            f"function {qualname!r} is defined in __main__, which workers cannot import: move it into a module"
        )
    return f"{module}:{qualname}"
