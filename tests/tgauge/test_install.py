"""The wheel a user installs works: built from the sources, installed into a fresh venv without
torch, matplotlib or transformers, its `tgauge` script sizes models and names the extra that
the measuring commands need.

Offline and fast: the wheel is built with this environment's setuptools (no build isolation),
installed with ``pip --no-deps --no-index``; its declared dependencies (read from the installed
wheel's metadata, with theirs, recursively) are linked from this environment into a folder the
fresh venv sees through a .pth file. Nothing else of this environment is visible there.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("estimator", "reference_model", "profiler", "tgauge")
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def _requirement_names(dist: md.Distribution) -> list[str]:
    """Names of ``dist``'s requirements that hold here without any extra."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

    names = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def _link_dependencies(wheel_dist: md.Distribution, into: Path) -> set[str]:
    """Symlink the files of every distribution the wheel needs (recursively) into ``into``."""
    seen: set[str] = set()
    todo = _requirement_names(wheel_dist)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = md.distribution(name)  # PackageNotFoundError: the dev env lacks a dependency
        tops = {Path(f).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)
        todo += _requirement_names(dist)
    return seen


def _pip_install(wheel: Path, env_dir: Path) -> None:
    """Install ``wheel`` into the venv at ``env_dir`` (no dependencies, no index)."""
    import pip

    args = ["install", "-q", "--no-deps", "--no-index", str(wheel)]
    if tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3):  # pip --python
        venv.create(env_dir, with_pip=False)
        cmd = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), *args]
    else:
        venv.create(env_dir, with_pip=True)
        cmd = [str(env_dir / "bin" / "python"), "-m", "pip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _build_isolation() -> list[str]:
    """Build with this environment's setuptools when it is the one pyproject.toml asks for (the
    dev extra installs it); otherwise let pip fetch it into an isolated build env (PyPI)."""
    try:  # not imported here: importing setuptools patches distutils
        enough = int(md.version("setuptools").split(".")[0]) >= 68
    except md.PackageNotFoundError:
        enough = False
    return ["--no-build-isolation"] if enough else []


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A venv holding the installed wheel and its dependencies only."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"  # a copy: the build writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *_build_isolation()]
        + ["--wheel-dir", str(root / "dist"), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = (root / "dist").glob("tgauge-*.whl")
    env_dir = root / "venv"
    _pip_install(wheel, env_dir)
    site = env_dir / SITE
    (wheel_dist,) = (d for d in md.distributions(path=[str(site)]) if d.name == "tgauge")
    deps = root / "deps"
    deps.mkdir()
    _link_dependencies(wheel_dist, deps)
    (site / "dependencies.pth").write_text(f"{deps}\n")
    hub = root / "hub"
    hub.mkdir()
    return {"root": root, "env": env_dir, "site": site, "hub": hub, "wheel": wheel}


def _run(fresh: dict[str, Path], *argv: str) -> subprocess.CompletedProcess[str]:
    """``tgauge ARGV`` from the fresh venv, in an empty folder, with no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "VIRTUAL"))}
    env |= {"HF_HUB_CACHE": str(fresh["hub"]), "COLUMNS": "160"}
    return subprocess.run(
        [str(fresh["env"] / "bin" / "tgauge"), *argv],
        capture_output=True,
        text=True,
        cwd=fresh["root"],
        env=env,
        timeout=120,
    )


def test_wheel_holds_every_subpackage(fresh):
    import zipfile

    names = set(zipfile.ZipFile(fresh["wheel"]).namelist())
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            assert source.relative_to(ROOT).as_posix() in names


def test_fresh_venv_has_no_torch_and_imports_the_installed_tgauge(fresh):
    code = (
        "import importlib.util as u, tgauge; "
        "print(tgauge.__file__, [m for m in ('torch', 'matplotlib', 'transformers', "
        "'huggingface_hub') if u.find_spec(m)])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [str(fresh["env"] / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        cwd=fresh["root"],
        env=env,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(fresh["site"])), out  # the wheel's copy, not the sources
    assert out[1:] == ["[]"], out


SIZING = [
    ["estimate", "gpt2-small", "--json"],
    ["fit", "llama-3-8b", "--gpu", "h100-sxm", "--dtype", "bf16", "--json"],
    ["sweep", "gpt2-small", "--vary", "seq_len=128,256", "--json"],
    ["presets", "--json"],
]


@pytest.mark.parametrize("argv", SIZING, ids=lambda a: a[0])
def test_installed_script_sizes_models_without_torch(fresh, argv):
    r = _run(fresh, *argv)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert json.loads(r.stdout)


def test_installed_script_prints_its_version(fresh):
    from tgauge import __version__

    r = _run(fresh, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"tgauge {__version__}" and __version__ in fresh["wheel"].name


MISSING = [
    (["validate", "gpt2-small", "-s", "32"], "tgauge[profile]"),
    (["validate", "--matrix", "--json"], "tgauge[profile]"),
    (["profile", "gpt2-small", "-s", "32"], "tgauge[profile]"),
    (["report", "--model", "gpt2-small", "--out", "{out}"], "tgauge[report]"),
]


@pytest.mark.parametrize(
    ("argv", "extra"), MISSING, ids=["validate", "matrix", "profile", "report"]
)
def test_measuring_commands_name_the_missing_extra(fresh, argv, extra):
    out = fresh["root"] / "report-out"
    r = _run(fresh, *(a.format(out=out) for a in argv))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"pip install '{extra}'" in line, line
    assert not out.exists()  # the report wrote nothing


def test_installed_script_reads_a_hub_id_from_the_cache_without_huggingface_hub(fresh):
    snapshot = fresh["hub"] / "models--org--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_GPT2))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    r = _run(fresh, "estimate", "org/tiny", "-s", "16", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spec"]["name"] == "org/tiny"


# a GPT-2 of 2 layers (GPT2Config field names)
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 100,
             "n_positions": 64}  # fmt: skip
