"""Campaign files: TOML validated with pydantic, every error naming the file, the key and what is allowed.

Relative paths in a campaign file are read relative to the file's own folder,
so ``campaigns/demo.toml`` works from any working directory.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .runtime.backends import BACKEND_NAMES

BACKEND_CHOICES = ("auto", *BACKEND_NAMES)


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    # strict: `cores = true` or `seed_sample = "8"` is an error, not 1 or 8; no inf or nan anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


FilePath = Annotated[Path, Strict(False)]  # TOML gives strings; a path is the one field that converts
Seed = Annotated[int, Field(ge=0, lt=2**31)]  # every consumer (torch, Vina, OpenMM) takes a 32-bit seed


class CampaignMeta(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: Seed = 42
    run_dir: str | None = None  # default: runs/<name> under the working directory
    rounds: int = Field(default=1, ge=1, le=20)  # active-learning rounds (steps 3-5 repeated)


class ReceptorSection(_Section):
    path: FilePath  # folder with receptor.pdb, receptor.pdbqt, site.toml
    site: FilePath | None = None  # another site.toml


class Filters(_Section):
    max_molecular_weight: float | None = Field(default=None, gt=0)
    max_rotatable_bonds: int | None = Field(default=None, ge=0)
    max_heavy_atoms: int | None = Field(default=None, gt=0)
    pains: bool = False  # drop compounds matching the RDKit PAINS A/B/C catalogue


class LibrarySection(_Section):
    path: FilePath
    id_column: str = "id"
    smiles_column: str = "smiles"
    limit: int | None = Field(default=None, gt=0)  # screen only the first N compounds
    filters: Filters = Filters()


class LigandsSection(_Section):
    """Ligand states docked per compound (stages/ligands.py); a compound scores as its best state."""

    ph: float = Field(default=7.4, ge=0, le=14)
    max_stereoisomers: int = Field(default=8, ge=1, le=64)  # over unassigned centres and double bonds
    max_protomers: int = Field(default=2, ge=1, le=8)  # per stereoisomer, most probable first

    def dock_args(self) -> list[str]:
        """The docking stage's command-line options for these settings."""
        return ["--ph", str(self.ph), "--max-stereoisomers", str(self.max_stereoisomers),
                "--max-protomers", str(self.max_protomers)]


class DockSection(_Section):
    seed_sample: int = Field(default=64, ge=8)  # compounds docked before the first training
    exhaustiveness: int = Field(default=8, ge=1, le=64)
    ligands_per_task: int = Field(default=8, ge=1)
    ranks: int = Field(default=1, ge=1)  # MPI ranks per docking task (>1 runs it under MPI)
    seed: Seed = 1


class SurrogateSection(_Section):
    epochs: int = Field(default=60, ge=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    cores: int = Field(default=1, ge=1)


class InferSection(_Section):
    batch_size: int = Field(default=1000, ge=10)


class RedockSection(_Section):
    top_k: int = Field(default=32, ge=1)


class MDSection(_Section):
    top_m: int = Field(default=4, ge=0)
    replicas: int = Field(default=3, ge=1)
    length_ps: float = Field(default=4.0, gt=0)
    equilibration_ps: float = Field(default=1.0, ge=0)
    frame_interval_ps: float = Field(default=0.5, gt=0)
    cores: int = Field(default=1, ge=1)  # OpenMM CPU threads per MD task
    solvent: Literal["implicit", "explicit"] = "implicit"  # explicit: TIP3P + ions, PME, NPT
    ligand_forcefield: Literal["gaff2"] = "gaff2"  # GAFF2 + AM1-BCC (AmberTools); MMFF94 was removed
    mmpbsa_py: Literal["none", "gb", "pb", "gb+pb"] = "none"  # also score the frames with AmberTools' MMPBSA.py

    @model_validator(mode="after")
    def _frames_fit(self) -> "MDSection":
        if self.frame_interval_ps > self.length_ps:
            raise ValueError("frame_interval_ps is longer than length_ps: no frame would be scored")
        return self


class HitsSection(_Section):
    """How the report and the export present and pick hits; changing it changes no computed result, so a
    run directory can be re-reported with other settings (it is not part of the resume check)."""

    hinge_residues: list[str] = Field(default_factory=list)  # e.g. ["VAL2240.B"]: H-bonds to their backbone
    require_hinge_hbond: bool = False  # the diverse top N takes only poses with a hinge backbone H-bond
    cluster_similarity: float = Field(default=0.4, gt=0, le=1)  # Butina on ECFP4: Tanimoto >= this joins
    cluster_pool: int = Field(default=1000, ge=1)  # cluster the best N ranked compounds
    diverse_top: int = Field(default=10, ge=1)  # size of the diverse table (one compound per cluster)
    interactions_top: int = Field(default=20, ge=0)  # interaction fingerprints of the best N poses
    viewer_top: int = Field(default=10, ge=0)  # poses in the report's 3D viewer

    @field_validator("hinge_residues")
    @classmethod
    def _residue_ids(cls, ids: list[str]) -> list[str]:
        from .interactions import check_residue_ids

        return check_residue_ids(ids)

    @model_validator(mode="after")
    def _hinge_named(self) -> "HitsSection":
        if self.require_hinge_hbond and not self.hinge_residues:
            raise ValueError("require_hinge_hbond = true needs hinge_residues (e.g. [\"VAL2240.B\"])")
        return self


class PilotSection(_Section):
    cores: int | None = Field(default=None, ge=1)  # default: the cores this process may use
    gpus: int = Field(default=0, ge=0)
    nodes: int = Field(default=1, ge=1)  # nodes the cores spread over (more than 1 on one machine: emulated)
    oversubscribe: bool = False  # allow more cores than the machine (or Slurm job) has: emulation, benchmarks
    exclusive: bool = False  # fence the cores between runtimes by [pilot.shares] instead of lending them
    routes: dict[Literal["executable", "function"], str] = Field(
        default_factory=lambda: {"executable": "auto", "function": "auto"}
    )
    shares: dict[str, int] = Field(default_factory=dict)  # backend -> weight when runtimes contend for cores
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # backend -> options

    @field_validator("routes")
    @classmethod
    def _known_backends(cls, routes: dict[str, str]) -> dict[str, str]:
        for kind, name in routes.items():
            if name not in BACKEND_CHOICES:
                raise ValueError(f"{kind}: unknown backend {name!r}: choose one of {', '.join(BACKEND_CHOICES)}")
        return routes


class Campaign(_Section):
    campaign: CampaignMeta
    receptor: ReceptorSection
    library: LibrarySection
    ligands: LigandsSection = LigandsSection()
    dock: DockSection = DockSection()
    surrogate: SurrogateSection = SurrogateSection()
    infer: InferSection = InferSection()
    redock: RedockSection = RedockSection()
    md: MDSection = MDSection()
    hits: HitsSection = HitsSection()
    pilot: PilotSection = PilotSection()

    source: FilePath | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _sizes_agree(self) -> "Campaign":
        if self.md.top_m > self.redock.top_k + self.dock.seed_sample:
            raise ValueError("md.top_m is larger than the number of docked compounds (dock.seed_sample + redock.top_k)")
        for kind in ("executable", "function"):
            if kind not in self.pilot.routes:
                raise ValueError(f"pilot.routes.{kind} is missing: name a backend ({', '.join(BACKEND_CHOICES)})")
        return self

    @property
    def name(self) -> str:
        return self.campaign.name

    def run_dir(self, override: str | Path | None = None) -> Path:
        if override is not None:
            return Path(override)
        return Path(self.campaign.run_dir) if self.campaign.run_dir else Path("runs") / self.campaign.name


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file; relative paths become relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise CampaignError(f"{path}: campaign file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignError(f"{path}: {format_errors(exc)}") from None
    campaign = _resolve_paths(campaign, path.parent)
    _check_files(campaign, path)
    return campaign.model_copy(update={"source": path})


def format_errors(exc: ValidationError) -> str:
    """One line per problem: ``key.path: what is wrong (got ...)``."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see campaigns/demo.toml for every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"{msg}"
        got = err.get("input")
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict):
            msg += f" (got {got!r})"
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def _resolve_paths(campaign: Campaign, base: Path) -> Campaign:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    receptor = campaign.receptor.model_copy(
        update={"path": absolute(campaign.receptor.path), "site": absolute(campaign.receptor.site)}
    )
    library = campaign.library.model_copy(update={"path": absolute(campaign.library.path)})
    return campaign.model_copy(update={"receptor": receptor, "library": library})


def _check_files(campaign: Campaign, source: Path) -> None:
    if not campaign.library.path.is_file():
        raise CampaignError(f"{source}: library.path: file {campaign.library.path} not found")
    if not campaign.receptor.path.is_dir():
        raise CampaignError(f"{source}: receptor.path: folder {campaign.receptor.path} not found")
    if campaign.receptor.site is not None and not campaign.receptor.site.is_file():
        raise CampaignError(f"{source}: receptor.site: file {campaign.receptor.site} not found")
