"""What a GPU machine without the Hub or a package registry needs to run `bench/gpu.py`: the
project's Python packages as wheels (the versions installed here, built for its Python) and the
SmolLM2 config and tokenizer (no weights), in one folder to carry.

    python bench/gpu_kit.py [--out .gpu-kit] [--python-version 3.12]

then, on the GPU machine, `bash bench/gpu_run.sh` (with the folder carried beside the checkout).
The wheels are the dependency closure of what the bench imports, less what such a machine
already has (torch and its CUDA libraries, numpy, pandas, pyarrow, psutil, jinja2: see
ON_THE_MACHINE); about 30 MB.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WANTED = ["transformers", "trl", "datasets", "peft", "accelerate", "kernels", "huggingface_hub"]
WANTED += ["pyyaml", "spaces"]  # recipes; pipeline.zerogpu's decorator (a no-op off a Space)
# On the GPU machine already (../shared/reference/gpu-device.md), or too large to carry.
ON_THE_MACHINE = {
    "torch", "numpy", "pandas", "pyarrow", "psutil", "jinja2", "markupsafe", "sympy", "mpmath",
    "networkx", "triton", "setuptools", "python-dateutil", "pytz", "tzdata", "six",
    "typing-extensions", "filelock", "matplotlib", "pillow", "gradio",
}  # fmt: skip


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> dict[str, str]:
    """Every installed distribution `names` need (markers evaluated here, extras left out),
    with its installed version, less ON_THE_MACHINE and nvidia-*."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = normal(todo.pop())
        if name in found or name in ON_THE_MACHINE or name.startswith("nvidia-"):
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # not needed on this platform
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(requirement.name)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu-kit"))
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    args = parser.parse_args()

    pins = closure(WANTED)
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    )
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", args.python_version]
    command += ["--implementation", "cp", "-d", str(wheels)]
    command += [arg for platform in platforms for arg in ("--platform", platform)]
    command += ["-r", str(args.out / "requirements.txt")]
    subprocess.run(command, check=True)

    from gpu import make_kit

    make_kit(args.out / "tokenizer")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(pins)} packages; {args.out}: {size / 1e6:.0f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
