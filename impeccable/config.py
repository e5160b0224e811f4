"""Campaign files: TOML validated with pydantic, every error naming the file, the key and what is allowed.

Relative paths in a campaign file are read relative to the file's own folder,
so ``campaigns/demo.toml`` works from any working directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from .runtime.backends import BACKEND_NAMES
from .runtime.backends.options import parse_options

BACKEND_CHOICES = ("auto", *BACKEND_NAMES)


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    # strict: `cores = true` or `seed_sample = "8"` is an error, not 1 or 8; no inf or nan anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _gpu_request(value: float) -> float:
    """0, a whole number of GPUs, or one n-th of a GPU (n up to 64): several such tasks share a device."""
    if value == 0 or (value >= 1 and value == int(value)):
        return value
    if 0 < value < 1 and abs(1 / value - round(1 / value)) < 1e-3 * round(1 / value) and round(1 / value) <= 64:
        return 1 / round(1 / value)
    raise ValueError("gpus per task: 0, a whole number, or one n-th of a GPU (0.5, 0.25, 0.125 ...)")


GpuRequest = Annotated[float, Field(ge=0), AfterValidator(_gpu_request)]
FilePath = Annotated[Path, Strict(False)]  # TOML gives strings; a path is the one field that converts
Seed = Annotated[int, Field(ge=0, lt=2**31)]  # every consumer (torch, Vina, OpenMM) takes a 32-bit seed


class CampaignMeta(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # names the run and its default run_dir
    seed: Seed = 42  # the seed sample, the surrogate's training, the MD replicas
    run_dir: str | None = None  # default: runs/<name> under the working directory
    rounds: int = Field(default=1, ge=1, le=20)  # active-learning rounds (steps 3-5 repeated)


class ReceptorSection(_Section):
    path: FilePath  # folder with receptor.pdb, receptor.pdbqt, site.toml
    site: FilePath | None = None  # another site.toml
    # metal ions of the folder's heterogens.toml the docking receptor keeps (stages/metals.py): auto keeps
    # those held by >= 2 protein residues within 2.8 A, keep all, remove none
    metals: Literal["auto", "keep", "remove"] = "auto"


PropertyName = Literal[
    "mw",
    "clogp",
    "tpsa",
    "hbd",
    "hba",
    "rotatable_bonds",
    "heavy_atoms",
    "formal_charge",
    "rings",
    "aromatic_rings",
    "fsp3",
]
AlertSet = Literal[
    "pains",
    "pains_a",
    "pains_b",
    "pains_c",
    "brenk",
    "nih",
    "zinc",
    "chembl",
    "chembl_glaxo",
    "chembl_dundee",
    "chembl_bms",
    "chembl_mlsmr",
    "chembl_inpharmatica",
    "chembl_lint",
    "chembl_surechembl",
]


class Filters(_Section):
    """Rules a compound must pass to be screened (stages/medfilters.py defines each); the first it breaks is
    recorded. Applied by the library stage's function tasks, to the standardised parent where standardised."""

    presets: list[Literal["ro5", "veber", "lead-like", "ro3"]] = Field(default_factory=list)  # published rule sets
    min: dict[PropertyName, float] = Field(default_factory=dict)  # e.g. {mw = 250, fsp3 = 0.2}
    max: dict[PropertyName, float] = Field(default_factory=dict)  # e.g. {clogp = 3.5, formal_charge = 1}
    alerts: list[AlertSet] = Field(default_factory=list)  # RDKit FilterCatalog sets, e.g. ["pains", "brenk"]
    include_smarts: list[str] = Field(default_factory=list)  # keep only compounds matching at least one
    exclude_smarts: list[str] = Field(default_factory=list)  # drop compounds matching any
    max_molecular_weight: float | None = Field(default=None, gt=0)  # = max.mw
    max_rotatable_bonds: int | None = Field(default=None, ge=0)  # = max.rotatable_bonds
    max_heavy_atoms: int | None = Field(default=None, gt=0)  # = max.heavy_atoms
    pains: bool = False  # = alerts ["pains"] (PAINS A/B/C)


SourceName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class LibrarySource(_Section):
    """One named source of ``[[library.sources]]``: a file, a glob, a folder, or a list of them."""

    name: SourceName
    path: FilePath | list[FilePath]
    id_column: str = "id"  # for SDF: the property holding the id (default: the title line)
    smiles_column: str = "smiles"  # CSV column with the SMILES


class LibrarySection(_Section):
    path: FilePath | list[FilePath] | None = None  # one library: a file, a glob, a folder, or a list of them
    sources: list[LibrarySource] = Field(default_factory=list)  # or several named sources (ids become name:id)
    id_column: str = "id"  # CSV column with the compound ids (for SDF: the property; default the title line)
    smiles_column: str = "smiles"  # CSV column with the SMILES
    limit: int | None = Field(default=None, gt=0)  # screen only the first N compounds
    standardize: bool = False  # largest organic fragment, neutralised (RDKit MolStandardize)
    tautomer: bool = False  # and the canonical tautomer (slow); needs standardize
    deduplicate: bool = False  # one compound per InChIKey across all sources; the first kept, every id noted
    batch_size: int = Field(default=2000, ge=1)  # compounds per library-preparation task
    seed_strategy: Literal["random", "diverse", "stratified"] = "random"  # how the seed sample is drawn
    filters: Filters = Filters()

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> LibrarySection:
        if (self.path is None) == (not self.sources):
            raise ValueError("give either library.path or [[library.sources]] (not both, not neither)")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"library.sources: every source needs its own name (got {', '.join(names)})")
        if self.tautomer and not self.standardize:
            raise ValueError("library.tautomer needs library.standardize = true")
        return self

    def describe(self) -> str:
        """The library as a message names it: its path (or paths), or its named sources."""
        if self.sources:
            return "sources " + ", ".join(f"{s.name} ({s.path})" for s in self.sources)
        return ", ".join(map(str, self.path)) if isinstance(self.path, list) else str(self.path)

    def source_list(self) -> list[tuple[str, Path | list[Path], str, str]]:
        """(name, path spec, id column, SMILES column) of each source; one unnamed library is named after its file."""
        if self.sources:
            return [(s.name, s.path, s.id_column, s.smiles_column) for s in self.sources]
        path = self.path if isinstance(self.path, Path) else Path(str(self.path[0]))  # type: ignore[index]
        name = (path.parent.name if any(c in path.name for c in "*?[") else path.name.split(".")[0]) or "library"
        return [(name, self.path, self.id_column, self.smiles_column)]  # type: ignore[list-item]

    def preparation(self) -> dict[str, Any]:
        """What the library stage's tasks need to know, as plain data."""
        return {
            "standardize": self.standardize,
            "tautomer": self.tautomer,
            "deduplicate": self.deduplicate,
            "filters": self.filters.model_dump(mode="json"),
        }


class LigandsSection(_Section):
    """Ligand states docked per compound (stages/ligands.py); a compound scores as its best state."""

    ph: float = Field(default=7.4, ge=0, le=14)  # protonation states by dimorphite-dl at this pH
    max_stereoisomers: int = Field(default=8, ge=1, le=64)  # over unassigned centres and double bonds
    max_protomers: int = Field(default=2, ge=1, le=8)  # per stereoisomer, most probable first

    def dock_args(self) -> list[str]:
        """The docking stage's command-line options for these settings."""
        return [
            "--ph",
            str(self.ph),
            "--max-stereoisomers",
            str(self.max_stereoisomers),
            "--max-protomers",
            str(self.max_protomers),
        ]


class DockSection(_Section):
    seed_sample: int = Field(default=64, ge=8)  # compounds docked before the first training
    exhaustiveness: int = Field(default=8, ge=1, le=64)  # Vina's search effort per ligand state
    ligands_per_task: int = Field(default=8, ge=1)  # compounds docked by one task
    ranks: int = Field(default=1, ge=1)  # MPI ranks per docking task (>1 runs it under MPI)
    seed: Seed = 1  # Vina's random seed


class SurrogateSection(_Section):
    epochs: int = Field(default=60, ge=1)  # training epochs; the one with the best validation RMSE is kept
    val_fraction: float = Field(default=0.2, gt=0, lt=0.9)  # docking scores held out to pick the epoch
    cores: int = Field(default=1, ge=1)  # cores per training task
    gpus: GpuRequest = 1  # per training task, where the allocation has GPUs


class InferSection(_Section):
    batch_size: int = Field(default=1000, ge=10)  # compounds per inference task
    # per batch: "auto" is one n-th of a GPU so that every core of a node can run a batch (featurisation is
    # CPU work; the model's share of a batch is small), e.g. 1/16 with 16 cores and 1 GPU
    gpus: GpuRequest | Literal["auto"] = "auto"


class RedockSection(_Section):
    top_k: int = Field(default=32, ge=1)  # best-predicted compounds not docked yet, re-docked per round


class MDSection(_Section):
    top_m: int = Field(default=4, ge=0)  # best docked compounds refined by MD and MM/GBSA per round (0: no MD)
    replicas: int = Field(default=3, ge=1)  # independent MD replicas per compound (ESMACS-style)
    length_ps: float = Field(default=4.0, gt=0)  # production per replica, picoseconds
    equilibration_ps: float = Field(default=1.0, ge=0)  # per replica, before production; not scored
    frame_interval_ps: float = Field(default=0.5, gt=0)  # production frames scored by MM/GBSA, one every this
    cores: int = Field(default=1, ge=1)  # OpenMM CPU threads per MD task
    gpus: GpuRequest = 1  # per replica task, where the allocation has GPUs (0.25: four replicas share one)
    # OpenMM platform: "auto" is CUDA, HIP or OpenCL for a replica holding a GPU, CPU otherwise
    platform: Literal["auto", "CPU", "CUDA", "HIP", "OpenCL"] = "auto"
    precision: Literal["mixed", "single", "double"] = "mixed"  # on a GPU platform
    solvent: Literal["implicit", "explicit"] = "implicit"  # explicit: TIP3P + ions, PME, NPT
    ligand_forcefield: Literal["gaff2"] = "gaff2"  # GAFF2 + AM1-BCC (AmberTools); MMFF94 was removed
    mmpbsa_py: Literal["none", "gb", "pb", "gb+pb"] = "none"  # also score the frames with AmberTools' MMPBSA.py

    @model_validator(mode="after")
    def _frames_fit(self) -> MDSection:
        if self.frame_interval_ps > self.length_ps:
            raise ValueError("frame_interval_ps is longer than length_ps: no frame would be scored")
        return self


class HitsSection(_Section):
    """How the report and the export present and pick hits: change it and rerun ``impeccable report`` (it is
    not part of the resume check). One key is the run's: ``check_poses``, the best N poses PoseBusters checks
    at the run's end; a run resumed with a larger N checks the rest (a report computes nothing)."""

    hinge_residues: list[str] = Field(default_factory=list)  # e.g. ["VAL2240.B"]: H-bonds to their backbone
    require_hinge_hbond: bool = False  # the diverse top N takes only poses with a hinge backbone H-bond
    cluster_similarity: float = Field(default=0.4, gt=0, le=1)  # Butina on ECFP4: Tanimoto >= this joins
    cluster_pool: int = Field(default=1000, ge=1)  # cluster the best N ranked compounds
    diverse_top: int = Field(default=10, ge=1)  # size of the diverse table (one compound per cluster)
    interactions_top: int = Field(default=20, ge=0)  # interaction fingerprints of the best N poses
    viewer_top: int = Field(default=10, ge=0)  # poses in the report's 3D viewer
    check_poses: int = Field(default=20, ge=0)  # PoseBusters' dock checks on the best N poses, at the run's end

    @field_validator("hinge_residues")
    @classmethod
    def _residue_ids(cls, ids: list[str]) -> list[str]:
        from .interactions import check_residue_ids

        return check_residue_ids(ids)

    @model_validator(mode="after")
    def _hinge_named(self) -> HitsSection:
        if self.require_hinge_hbond and not self.hinge_residues:
            raise ValueError('require_hinge_hbond = true needs hinge_residues (e.g. ["VAL2240.B"])')
        return self


class PilotSection(_Section):
    cores: int | None = Field(default=None, ge=1)  # default: the cores this process may use
    # GPUs over all nodes; "auto": those this process may use (`impeccable resources` says which and why)
    gpus: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    nodes: int = Field(default=1, ge=1)  # nodes the cores spread over (more than 1 on one machine: emulated)
    oversubscribe: bool = False  # allow more cores than the machine (or Slurm job) has: emulation, benchmarks
    exclusive: bool = False  # fence the cores between runtimes by [pilot.shares] instead of lending them
    routes: dict[Literal["executable", "function"], str] = Field(  # the backend serving each kind of task
        default_factory=lambda: {"executable": "auto", "function": "auto"}
    )
    shares: dict[str, int] = Field(default_factory=dict)  # backend -> weight when runtimes contend for cores
    # backend -> its options (runtime/backends/options.py: each backend's keys, types and defaults)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, given in options.items():
            parse_options(name, given)  # refused with the backend and key named
        return options

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
    def _sizes_agree(self) -> Campaign:
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
    return campaign_from_dict(data, path.parent, source=path)


def campaign_from_dict(data: Mapping[str, Any], base_dir: str | Path, *, source: Path | None = None) -> Campaign:
    """Validate a campaign given as a dict shaped like the TOML file (as from a notebook); relative paths
    become relative to ``base_dir``. Errors name ``source`` (or "campaign") and the key."""
    label = source if source is not None else "campaign"
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignError(f"{label}: {format_errors(exc)}") from None
    campaign = _resolve_paths(campaign, Path(base_dir))
    _check_files(campaign, label)
    return campaign.model_copy(update={"source": source})


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

    def spec(p: Path | list[Path] | None) -> Path | list[Path] | None:
        return [absolute(q) for q in p] if isinstance(p, list) else absolute(p)  # type: ignore[misc]

    lib = campaign.library
    sources = [s.model_copy(update={"path": spec(s.path)}) for s in lib.sources]
    library = lib.model_copy(update={"path": spec(lib.path), "sources": sources})
    return campaign.model_copy(update={"receptor": receptor, "library": library})


def _check_files(campaign: Campaign, source: Path | str) -> None:
    from .stages.errors import StageInputError
    from .stages.library_sources import expand_paths

    lib = campaign.library
    for i, (_, spec, _, _) in enumerate(lib.source_list()):
        try:
            expand_paths(spec)
        except StageInputError as exc:
            key = f"library.sources[{i}].path" if lib.sources else "library.path"
            raise CampaignError(f"{source}: {key}: {exc}") from None
    if not campaign.receptor.path.is_dir():
        raise CampaignError(f"{source}: receptor.path: folder {campaign.receptor.path} not found")
    if campaign.receptor.site is not None and not campaign.receptor.site.is_file():
        raise CampaignError(f"{source}: receptor.site: file {campaign.receptor.site} not found")
    _check_md_metals(campaign, source)


def _check_md_metals(campaign: Campaign, source: Path) -> None:
    """MD simulates a kept metal ion only with Li/Merz 12-6 parameters (stages/metals.py): refuse any other."""
    from .stages.metals import MD_PARAMETERISED, kept_metals, read_provenance

    kept = kept_metals(read_provenance(campaign.receptor.path / "heterogens.toml"), campaign.receptor.metals)
    missing = [h.label for h in kept if h.resname not in MD_PARAMETERISED]
    if missing and campaign.md.top_m > 0:
        raise CampaignError(
            f"{source}: receptor.metals = {campaign.receptor.metals!r} keeps {', '.join(missing)} for docking, but "
            f"the MD stage has no parameters for it (Li/Merz 12-6 ions through tleap: "
            f"{', '.join(sorted(MD_PARAMETERISED))}): set md.top_m = 0, or receptor.metals = 'remove' to dock "
            "and simulate the metal-free protein"
        )


def load_with_overrides(
    path: Path, *, cores: int | None = None, backend: str | None = None, oversubscribe: bool = False
) -> Campaign:
    """The campaign file with a command line's overrides (pilot.cores, every route, oversubscribe)."""
    campaign = load_campaign(path)
    update: dict[str, Any] = {}
    if cores:
        update["cores"] = cores
    if backend:
        update["routes"] = {"executable": backend, "function": backend}
    if oversubscribe:
        update["oversubscribe"] = True
    if update:
        campaign = campaign.model_copy(update={"pilot": campaign.pilot.model_copy(update=update)})
    return campaign
