"""The report's 3D pose viewer: 3Dmol.js, copied next to the report, with the poses inlined.

3Dmol.js (BSD-3-Clause, Rego & Koes 2015) comes from the npm registry, pinned
to one version and checked against the registry's sha512 before use; it is
fetched once (``npm pack``, at report time) into a cache and copied into the
report folder beside ``index.html``, so the page never loads code from the
network and the folder opens offline. ``IMPECCABLE_3DMOL_JS`` names a copy to
use instead (a machine without npm). Without either the report says how to get
it and keeps every other section.

The page holds the receptor once (heavy atoms and backbone N-H, the H-bond
donor of a hinge) and each pose's SDF; pocket residues (any atom within 5 A of
the pose) are drawn as thin sticks and labelled, interacting residues are
labelled in the colour of their contact, and each contact is a dashed line.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .interactions import PoseInteractions

VERSION = "2.5.5"
INTEGRITY = "sha512-kqNHouGqq3YfW58174tdERvm0XYTmP0tavQKOqIw1ouc2OJ7epkXEFrtEkVXV0clBZT2Ze2xHRC/qxX0u0qCdw=="
SCRIPT = "3Dmol-min.js"
LICENSE = "3Dmol-LICENSE.txt"
CONTACT_COLOURS = {
    "HBAcceptor": "#1f77b4",
    "HBDonor": "#1f77b4",
    "XBDonor": "#17becf",
    "Cationic": "#d62728",
    "Anionic": "#d62728",
    "PiStacking": "#9467bd",
    "PiCation": "#9467bd",
    "CationPi": "#9467bd",
    "Hydrophobic": "#b8860b",
}


class ViewerUnavailable(RuntimeError):
    """3Dmol.js could not be had (no npm, no registry, no IMPECCABLE_3DMOL_JS); the message says what to do."""


@dataclass(frozen=True)
class ShownPose:
    label: str  # "1 MOSES-0009755 (Vina -9.1)"
    sdf: str
    interactions: PoseInteractions | None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "impeccable" / f"3dmol-{VERSION}"


def viewer_script() -> Path:
    """The 3Dmol.js file to copy: ``IMPECCABLE_3DMOL_JS``, else the cache, else fetched with ``npm pack``."""
    named = os.environ.get("IMPECCABLE_3DMOL_JS")
    if named:
        if not Path(named).is_file():
            raise ViewerUnavailable(f"IMPECCABLE_3DMOL_JS={named}: no such file")
        return Path(named)
    cached = cache_dir() / SCRIPT
    if not cached.is_file():
        _fetch(cache_dir())
    return cached


def _fetch(folder: Path) -> None:
    """``npm pack 3dmol@VERSION``, checked against INTEGRITY, unpacked into ``folder`` (atomically)."""
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerUnavailable(
            f"npm not found: install Node.js, or download 3dmol@{VERSION} from the npm "
            f"registry and set IMPECCABLE_3DMOL_JS to its build/{SCRIPT}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", f"3dmol@{VERSION}", "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            raise ViewerUnavailable(f"npm pack 3dmol@{VERSION}: no answer from the registry in 120 s") from None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise ViewerUnavailable(f"npm pack 3dmol@{VERSION} failed: {done.stderr.strip()[-300:]}")
        data = tarballs[0].read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != INTEGRITY:
            raise ViewerUnavailable(f"3dmol@{VERSION} from npm does not match its pinned sha512; not used")
        staged = Path(tmp) / "out"
        staged.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for member, name in ((f"package/build/{SCRIPT}", SCRIPT), ("package/LICENSE", LICENSE)):
                source = tar.extractfile(member)
                if source is None:
                    raise ViewerUnavailable(f"3dmol@{VERSION}: {member} missing from the package")
                (staged / name).write_bytes(source.read())
        if not (folder / SCRIPT).is_file():
            os.replace(staged, folder)  # another process may have won the race: theirs is the same file


def install_script(report_dir: Path) -> str:
    """Copy 3Dmol.js (and its licence) into the report folder; returns the file name to load."""
    script = viewer_script()
    shutil.copyfile(script, report_dir / SCRIPT)
    licence = script.parent / LICENSE
    if licence.is_file():
        shutil.copyfile(licence, report_dir / LICENSE)
    return SCRIPT


def receptor_text(receptor_pdb: Path) -> str:
    """ATOM records of the receptor's heavy atoms and backbone amide H (hinge donors), for the page."""
    keep = []
    for line in receptor_pdb.read_text().splitlines():
        if not line.startswith(("ATOM", "HETATM")):
            continue
        name, element = line[12:16].strip(), line[76:78].strip()
        if element == "H" and name != "H":
            continue
        keep.append(line)
    return "\n".join(keep) + "\nEND\n"


def viewer_section(receptor_pdb: Path, poses: Sequence[ShownPose], script: str) -> str:
    """The viewer's HTML: a canvas, one button per pose, the contact list of the pose shown."""
    data = {"receptor": receptor_text(receptor_pdb), "colours": CONTACT_COLOURS, "hits": [_pose_json(p) for p in poses]}
    buttons = "".join(
        f'<button type="button" data-pose="{i}">{html.escape(p.label)}</button>' for i, p in enumerate(poses)
    )
    payload = json.dumps(data).replace("</", "<\\/")  # never closes the script element
    return (
        f'<div id="viewer3d" style="width:100%;height:520px;position:relative;border:1px solid #ccc"></div>'
        f'<div id="viewer-poses" class="poses">{buttons}</div><p id="viewer-contacts" class="note"></p>'
        f'<script src="{html.escape(script)}"></script>'
        f'<script type="application/json" id="pose-data">{payload}</script><script>{_JS}</script>'
    )


def _pose_json(p: ShownPose) -> dict[str, object]:
    found = p.interactions
    contacts = (
        []
        if found is None
        else [
            {
                "residue": c.residue,
                "kind": c.kind,
                "label": c.label,
                "hinge": c.hinge,
                "l": c.ligand_xyz,
                "p": c.protein_xyz,
            }
            for c in found.contacts
        ]
    )
    return {"label": p.label, "sdf": p.sdf, "pocket": list(found.pocket) if found else [], "contacts": contacts}


_JS = r"""
(function () {
  var el = document.getElementById('viewer3d');
  var data = JSON.parse(document.getElementById('pose-data').textContent);
  if (typeof $3Dmol === 'undefined') { el.textContent = '3Dmol.js did not load: keep 3Dmol-min.js beside this page.'; return; }
  var viewer = $3Dmol.createViewer(el, {backgroundColor: 'white'});
  var receptor = viewer.addModel(data.receptor, 'pdb');
  var ligand = null;
  function residue(id) {
    var m = id.match(/^([A-Z0-9]+?)(-?\d+)(?:\.(.+))?$/);
    var sel = {resi: parseInt(m[2], 10)};
    if (m[3]) { sel.chain = m[3]; }
    return sel;
  }
  function show(i) {
    var hit = data.hits[i];
    if (ligand) { viewer.removeModel(ligand); }
    viewer.removeAllLabels(); viewer.removeAllShapes();
    receptor.setStyle({}, {cartoon: {color: 'lightgrey', opacity: 0.75}});
    ligand = viewer.addModel(hit.sdf, 'sdf');
    ligand.setStyle({}, {stick: {radius: 0.22, colorscheme: 'greenCarbon'}});
    var labelled = {};
    hit.contacts.forEach(function (c) {
      var colour = data.colours[c.kind] || 'black';
      viewer.addCylinder({start: {x: c.l[0], y: c.l[1], z: c.l[2]}, end: {x: c.p[0], y: c.p[1], z: c.p[2]},
                          radius: 0.06, dashed: true, color: colour});
      if (!labelled[c.residue]) {
        labelled[c.residue] = true;
        viewer.addLabel(c.residue + (c.hinge ? ' hinge' : ''), {position: {x: c.p[0], y: c.p[1], z: c.p[2]},
          fontSize: 12, fontColor: colour, backgroundColor: 'white', backgroundOpacity: 0.8});
      }
    });
    hit.pocket.forEach(function (r) {
      receptor.setStyle(residue(r), {cartoon: {color: 'lightgrey', opacity: 0.75},
                                     stick: {radius: 0.12, colorscheme: 'whiteCarbon'}});
      if (!labelled[r]) {
        viewer.addResLabels(residue(r), {fontSize: 9, fontColor: '#555', showBackground: false});
      }
    });
    viewer.zoomTo({model: ligand});
    viewer.zoom(0.8);
    viewer.render();
    var items = hit.contacts.map(function (c) { return c.label; });
    document.getElementById('viewer-contacts').textContent = hit.label + ': ' +
      (items.length ? items.join('; ') : 'no interactions computed for this pose');
    el.setAttribute('data-shown', String(i));
  }
  Array.prototype.forEach.call(document.querySelectorAll('#viewer-poses button'), function (b) {
    b.addEventListener('click', function () { show(parseInt(b.getAttribute('data-pose'), 10)); });
  });
  window.impeccableShowPose = show;
  if (data.hits.length) { show(0); }
})();
"""
