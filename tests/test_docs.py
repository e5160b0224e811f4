"""The documentation: its runnable example runs, and the generated campaign-file reference covers every key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from impeccable import config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

from campaign_keys import _sections, reference_markdown  # noqa: E402 - the docs' own generator


def test_the_campaign_reference_has_every_key_with_a_type_a_default_and_a_comment():
    text = reference_markdown(config.Campaign, ROOT / "impeccable" / "config.py")
    rows = _table_rows(text, "### `[")
    keys = [
        f"{path}.{name}"
        for path, model in _sections(config.Campaign)
        for name, field in model.model_fields.items()
        if not field.exclude and not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))
    ]
    assert sorted(rows) == sorted(keys)
    for key in keys:
        type_, default, _, comment = rows[key]
        assert type_ and default and comment, f"{key}: a key needs a type, a default and a comment in config.py"
    assert rows["dock.exhaustiveness"][:3] == ["integer", "`8`", ">= 1; &lt;= 64"]
    assert rows["md.gpus"][2].startswith(">= 0; 0, a whole number of GPUs")  # an AfterValidator's docstring
    assert rows["campaign.name"][1:3] == ["required", "not empty; matches `^[A-Za-z0-9_.-]+$`"]
    assert "frame_interval_ps is longer than length_ps" in text  # a check across keys
    assert "runs/&lt;name>" in rows["campaign.run_dir"][3]  # not read as an HTML tag


@pytest.mark.slow
def test_the_python_example_runs_and_its_run_reads_back(tmp_path):
    """docs/examples/screen_from_python.py, as a user runs it (real docking and surrogate; about a minute of CPU)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "screen_from_python.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "example: last session done" in out and "seed dock (compounds): 12 done, 0 failed" in out
    assert "re-dock (compounds): 3 done" in out and "infer r0 (compounds): 60 done" in out
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    assert (tmp_path / "run" / "export" / "hits.csv").is_file()
    code = (
        "import impeccable; c = impeccable.load_campaign('campaigns/demo.toml'); "
        f"print(impeccable.open_run({str(tmp_path / 'run')!r}).hits().head())"
    )
    check = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "MOSES-" in check.stdout, check.stderr


def test_the_backend_options_reference_has_every_option_with_a_type_a_default_and_a_comment():
    from campaign_keys import options_markdown

    from impeccable.runtime.backends import options

    text = options_markdown(options.OPTIONS, ROOT / "runtime" / "backends" / "options.py")
    rows = _table_rows(text, "### `[pilot.options.")
    keys = [f"{b}.{f.alias or n}" for b, model in options.OPTIONS.items() for n, f in model.model_fields.items()]
    assert sorted(rows) == sorted(keys)
    for key in keys:
        type_, default, _, comment = rows[key]
        assert type_ and default and comment, f"{key}: an option needs a type, a default and a comment"
    assert rows["flux.validate"][:2] == ["boolean", "`false`"] and rows["local.preload"][0] == "list of strings"
    assert "test_size is gone" in text  # the check of a removed option


def _table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """``section.key`` -> the other cells of its row, from the generated Markdown tables."""
    rows, section = {}, ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line.removeprefix(heading).removesuffix("]`")
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            rows[f"{section}.{cells[0].strip('`')}"] = cells[1:]
    return rows
