"""The wheel built from the project (``python -m build``) carries what the service needs at
run time: the dashboard's vendored charting library, the Alembic migrations and the demo's
sample data; installed on its own (``pip install --target``), it migrates a database and
serves ``/dashboard`` with its assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the project, so that the build leaves no build/ or egg-info in the checkout
    src = out / "src"
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the files of the project are not known")
    files = listed.stdout.splitlines()
    for rel in files:
        p = ROOT / rel
        if p.is_file():
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob("kt_tutor-*.whl")
    return whl


def test_wheel_carries_the_dashboard_migrations_and_sample(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "LICENSES.txt"):
        assert f"tutor/dashboard/static/vendor/{f}" in names, f
    for f in ("index.html", "app.js", "app.css"):
        assert f"tutor/dashboard/static/{f}" in names, f
    assert "tutor/db/migrations/env.py" in names
    versions = {n for n in names if n.startswith("tutor/db/migrations/versions/0")}
    assert len(versions) >= 3, versions
    assert any(n.startswith("tutor/sample/assist2009_ccss/") for n in names)
    assert not any(n.startswith(("tests/", "demo/", "runs/")) for n in names)


def test_installed_wheel_migrates_and_serves_the_dashboard(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    script = f"""
import sys
sys.path.insert(0, {str(target)!r})
import tutor
assert tutor.__file__.startswith({str(target)!r}), tutor.__file__
from fastapi.testclient import TestClient
from tutor.api import create_app
from tutor.db.migrate import current, upgrade
from tutor.settings import Settings
url = "sqlite:///{tmp_path / "w.db"}"
upgrade(url)
assert current(url) is not None
app = create_app(Settings(database_url=url, environment="test", analytics_warmup_groups=0))
with TestClient(app) as c:
    r = c.get("/dashboard")
    assert r.status_code == 200, r.text
    for f in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        a = c.get("/dashboard/static/vendor/" + f)
        assert a.status_code == 200 and len(a.content) > 10_000, (f, a.status_code)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr[-3000:]
