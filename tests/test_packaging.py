"""The Space packaging: README front matter a Space reads, and requirements that install there
(ZeroGPU: torch 2.8-2.11, Python 3.10 or 3.12) while the local list stays the same otherwise."""

from __future__ import annotations

from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def requirements(name: str) -> dict[str, Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {r.name: r for r in reqs}


def test_space_requirements_stay_in_zerogpu_range_and_match_the_local_list():
    space, local = requirements("requirements.txt"), requirements("requirements-local.txt")
    torch = space.pop("torch").specifier
    assert all(Version(v) in torch for v in ("2.8.0", "2.9.1", "2.10.0", "2.11.0"))
    assert not any(Version(v) in torch for v in ("2.7.1", "2.12.0", "2.13.0"))
    assert str(local.pop("torch").specifier) == "==2.13.0"  # the CPU build on this machine's disk
    assert {n: str(r) for n, r in space.items()} == {n: str(r) for n, r in local.items()}
    assert "oauth" in space["gradio"].extras  # gr.LoginButton needs it


def test_readme_front_matter_configures_the_space():
    import gradio

    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["sdk_version"] == gradio.__version__  # the version the tests ran
    assert Version(meta["sdk_version"]) in requirements("requirements.txt")["gradio"].specifier
    assert meta["python_version"] in ("3.10", "3.12")
    assert meta["hf_oauth"] is True and meta["hf_oauth_scopes"] == ["contribute-repos"]
    assert "Qwen/Qwen2.5-0.5B-Instruct" in meta["models"]
    assert meta["datasets"] == ["shawhin/youtube-titles-dpo"]
    assert {"dpo", "rlhf"} <= set(meta["tags"])
    assert 0 < len(meta["short_description"]) <= 60


def test_the_project_declares_requirements_txts_dependencies_and_its_commands():
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {r.name: r for r in map(Requirement, project["dependencies"])}
    space = requirements("requirements.txt")
    torch = declared.pop("torch").specifier
    # both the Space's torch range and the CPU build the local set-up pins
    assert all(Version(v) in torch for v in ("2.8.0", "2.11.0", "2.13.0"))
    space.pop("torch")
    assert {n: str(r) for n, r in declared.items()} == {n: str(r) for n, r in space.items()}
    scripts = {"title-dpo": "pipeline.cli:main", "title-dpo-hub": "hub.cli:main"}
    assert project["scripts"] == scripts
    # installed (editable) by the set-up, so the commands and `bench/` find the project
    installed = importlib.metadata.entry_points(group="console_scripts")
    found = {e.name: e.value for e in installed if e.name in scripts}
    assert found == scripts
    from hub.cli import main as hub_main
    from pipeline.cli import main

    assert installed[("title-dpo")].load() is main
    assert installed[("title-dpo-hub")].load() is hub_main


def test_a_jobs_runtime_is_the_space_list_without_torch_and_the_web_app():
    """A job installs requirements-jobs.txt on its image's torch (hub/jobs.py): the same
    bounds as requirements.txt, the image's torch in the Space's range, and nothing the
    training commands import is left out."""
    import subprocess
    import sys

    from hub.jobs import DEFAULT_IMAGE

    space, jobs = requirements("requirements.txt"), requirements("requirements-jobs.txt")
    assert {n: str(r) for n, r in jobs.items()} == {n: str(space[n]) for n in jobs}
    assert set(space) - set(jobs) == {"torch", "gradio", "spaces", "uvloop", "httptools"}
    image_torch = DEFAULT_IMAGE.split(":")[1].split("-")[0]
    assert Version(image_torch) in space["torch"].specifier
    # the job's three commands import without the web app's packages
    blocked = "import sys; sys.modules.update(dict.fromkeys(['gradio', 'spaces', 'uvloop']))"
    code = (
        f"{blocked}; import hub.cli, hub.pull, hub.push, pipeline.cli, pipeline.dpo, "
        "pipeline.reward, pipeline.rl, pipeline.recipes"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
