"""Campaign files: shipped ones load; every error names the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from impeccable.campaign import quota
from impeccable.config import CampaignError, load_campaign

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
[campaign]
name = "t"
[receptor]
path = "{receptor}"
[library]
path = "{library}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text.format(receptor=ROOT / "data/receptors/4jsv", library=ROOT / "data/library/moses_20k.csv"))
    return path


@pytest.mark.parametrize("name", ["demo.toml", "screen.toml"])
def test_shipped_campaigns_load(name):
    campaign = load_campaign(ROOT / "campaigns" / name)
    assert campaign.receptor.path.is_dir() and campaign.library.path.is_file()


def test_defaults_and_relative_paths(tmp_path):
    (tmp_path / "lib.csv").write_text("id,smiles\na,CCO\n")
    (tmp_path / "c.toml").write_text(
        f'[campaign]\nname="t"\n[receptor]\npath="{ROOT}/data/receptors/4jsv"\n[library]\npath="lib.csv"\n'
    )
    campaign = load_campaign(tmp_path / "c.toml")
    assert campaign.library.path == tmp_path / "lib.csv"
    assert campaign.pilot.routes == {"executable": "auto", "function": "auto"}
    assert campaign.run_dir() == Path("runs/t")
    assert campaign.ligands.dock_args() == ["--ph", "7.4", "--max-stereoisomers", "8", "--max-protomers", "2"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("[dock]\nexhaustiveness = 0\n", r"dock.exhaustiveness: Input should be greater than or equal to 1 \(got 0\)"),
        ("[dock]\nexhaustivness = 8\n", r"dock.exhaustivness: unknown key"),
        (
            "[pilot.routes]\nexecutable = 'slurm'\nfunction = 'local'\n",
            r"pilot.routes: executable: unknown backend 'slurm': choose one of auto, local, flux, dragon, srun",
        ),
        ("[md]\nlength_ps = 1\nframe_interval_ps = 2\n", r"md: frame_interval_ps is longer than length_ps"),
        ("[md]\ntop_m = 1000\n", r"md.top_m is larger than the number of docked compounds"),
        (
            "[ligands]\nmax_stereoisomers = 0\n",
            r"ligands.max_stereoisomers: Input should be greater than or equal to 1",
        ),
        ("[ligands]\nph = 15\n", r"ligands.ph: Input should be less than or equal to 14"),
        (
            "[library.filters]\npresets = ['lead_like']\n",
            r"library.filters.presets.0: Input should be 'ro5', 'veber', "
            r"'lead-like' or 'ro3'",
        ),
        ("[library.filters]\nmax = {{logp = 3}}\n", r"library.filters.max.logp.\[key\]: Input should be 'mw', 'clogp'"),
        ("[library.filters]\nalerts = ['brenck']\n", r"library.filters.alerts.0: Input should be 'pains'"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, extra, message):
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(CampaignError, match=message) as info:
        load_campaign(path)
    assert str(info.value).startswith(str(path))


def test_missing_section_and_files(tmp_path):
    with pytest.raises(CampaignError, match=r"c.toml: library: required key is missing"):
        load_campaign(write(tmp_path, '[campaign]\nname="t"\n[receptor]\npath="x"\n'))
    with pytest.raises(CampaignError, match=r"library.path: file .*nope.csv not found"):
        load_campaign(write(tmp_path, MINIMAL.replace("{library}", "nope.csv")))
    with pytest.raises(CampaignError, match="campaign file not found"):
        load_campaign(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign\n")
    with pytest.raises(CampaignError, match="bad.toml: not valid TOML"):
        load_campaign(bad)


@pytest.mark.parametrize("total, count", [(1, 5), (4, 12), (7, 3), (20, 1), (3, 0)])
def test_streaming_quotas_sum_exactly(total, count):
    shares = [quota(i, total, count) for i in range(total)]
    assert sum(shares) == count and max(shares) - min(shares) <= 1


def test_run_dir_is_made_absolute(tmp_path, monkeypatch):
    """Regression: a relative run dir broke every task, since tasks run in their own working folders."""
    from impeccable.campaign import CampaignRunner

    monkeypatch.chdir(tmp_path)
    runner = CampaignRunner(load_campaign(ROOT / "campaigns" / "demo.toml"), Path("runs/demo"))
    assert runner.run_dir == tmp_path / "runs" / "demo" and runner.stages.ctx.work.is_absolute()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[campaign]\nseed = -1", r"campaign\.seed: Input should be greater than or equal to 0"),
        ("[campaign]\nseed = 18446744073709551616", r"campaign\.seed"),
        ("[md]\nlength_ps = inf", r"md\.length_ps: Input should be a finite number"),
        ("[pilot]\ncores = true", r"pilot\.cores: Input should be a valid integer \(got True\)"),
        ('[dock]\nseed_sample = "8"', r"dock\.seed_sample: Input should be a valid integer \(got '8'\)"),
    ],
)
def test_values_are_not_coerced(tmp_path, text, message):
    base = MINIMAL.replace('[campaign]\nname = "t"', '[campaign]\nname = "t"' + text.removeprefix("[campaign]"))
    if not text.startswith("[campaign]"):
        base = MINIMAL + text + "\n"
    with pytest.raises(CampaignError, match=message):
        load_campaign(write(tmp_path, base))


def test_library_sources_and_their_checks(tmp_path):
    (tmp_path / "a.sdf").write_text("")
    (tmp_path / "chunks").mkdir()
    (tmp_path / "chunks" / "x.csv").write_text("id,smiles\na,CCO\n")
    base = f'[campaign]\nname="t"\n[receptor]\npath="{ROOT}/data/receptors/4jsv"\n'
    sources = '[[library.sources]]\nname="v"\npath="a.sdf"\n[[library.sources]]\nname="h"\npath="chunks/*.csv"\n'
    (tmp_path / "c.toml").write_text(base + "[library]\nstandardize = true\n" + sources)
    lib = load_campaign(tmp_path / "c.toml").library
    assert [(name, spec) for name, spec, _, _ in lib.source_list()] == [
        ("v", tmp_path / "a.sdf"),
        ("h", tmp_path / "chunks" / "*.csv"),
    ]
    for library, message in [
        ('[library]\npath = "a.sdf"\n' + sources, "give either library.path or \\[\\[library.sources\\]\\]"),
        ("[library]\n", "give either library.path"),
        ('[library]\ntautomer = true\npath = "a.sdf"\n', "library.tautomer needs library.standardize = true"),
        (sources.replace('name="h"', 'name="v"'), "every source needs its own name"),
        (sources.replace("chunks/*.csv", "chunks/*.sdf"), r"library.sources\[1\].path: .*no library files here"),
    ]:
        (tmp_path / "c.toml").write_text(base + library)
        with pytest.raises(CampaignError, match=message):
            load_campaign(tmp_path / "c.toml")
