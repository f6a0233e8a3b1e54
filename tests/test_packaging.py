"""A built wheel carries the package, the templates and the console command."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_contains_templates_and_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("g4media-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.name for p in (ROOT / "templates").iterdir() if p.is_file())
    assert templates, "templates/ is empty"
    for name in templates:
        assert f"mediapipe_g4/templates/{name}" in names
    assert "mediapipe_g4/cli.py" in names and "mediapipe_g4/media.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "g4media = mediapipe_g4.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()
