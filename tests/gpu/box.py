"""The GPU box's Python packages, the wheels carried to it, and a CPU stand-in for it.

    python3 tests/gpu/box.py missing            # modules the check needs that do not import here
    python3 tests/gpu/box.py carried            # the distributions to carry as wheels
    python3 tests/gpu/box.py pack DIR           # those wheels, zipped from this installation
    python3 tests/gpu/box.py emulate DIR        # DIR/site and DIR/bin: this python, box packages only

The box (docs/gpu-check.md) has ``BOX`` installed and nothing else, no network, and
takes up to 64 MiB of git-ignored files with the tree. What the project needs beyond ``BOX`` is
``CARRIED``: pure-Python wheels that ``fetch_wheels.sh`` puts in ``tests/gpu/wheels/`` and
``check.sh`` appends to ``PYTHONPATH`` (Python imports pure packages from a zip) whenever one of
``NEEDED`` does not import.

``emulate`` reproduces the box on a CPU machine so its first run is not its first test: a folder
``site`` with links to exactly the installed files of ``BOX`` and what they require (resolved from
the installed metadata), and a ``sitecustomize.py`` that drops this interpreter's own
site-packages (and the editable install of the project) from ``sys.path``, so with ``site`` on
``PYTHONPATH`` only the box's packages import; ``onnxruntime`` is shown as the box's CPU build
(distribution ``onnxruntime``, CPU providers only) even where onnxruntime-gpu is installed.
``bin/python3`` runs this interpreter; ``bin/python`` is not the box's interpreter and fails,
as a ``python`` without torch would there. This file imports only the standard library except in
``emulate`` (``packaging``, for the requirement markers), so it runs on the box as it is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import stat
import sys
import zipfile
from pathlib import Path

# What python3 on the box has (docs/gpu-check.md); torch there is 2.11 with CUDA 13.
BOX = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "onnx",
    "onnxscript",
    "onnx-ir",
    "onnxruntime",
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "click",
    "pyyaml",
    "tqdm",
    "matplotlib",
    "scikit-learn",
    "ml-dtypes",
    "safetensors",
)
# Pure-Python distributions the project imports that the box lacks (its other missing ones,
# TensorRT and onnxruntime-gpu, are binary and stay missing: their backends are refused there).
CARRIED = ("onnx-graphsurgeon", "onnxconverter-common")
# Module the check imports -> the distribution that provides it.
NEEDED = {
    "pytest": "pytest",
    "onnx_graphsurgeon": "onnx-graphsurgeon",
    "onnxconverter_common": "onnxconverter-common",
}
GPU_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "NvTensorRTRTXExecutionProvider",
)


def missing() -> list[str]:
    """The modules of ``NEEDED`` that do not import in this interpreter."""
    out = []
    for module in NEEDED:
        try:
            importlib.import_module(module)
        except Exception:
            out.append(module)
    return out


def pack(dist_name: str, dest: Path) -> Path:
    """A wheel of the installed distribution ``dist_name``, written to ``dest`` from its installed
    files (RECORD); for a machine without the package index. Binary distributions are refused:
    the box's Python would not load their compiled modules from a zip."""
    dist = importlib.metadata.distribution(dist_name)
    files = [
        f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)
    ]
    binary = [str(f) for f in files if str(f).endswith((".so", ".pyd", ".dylib"))]
    if binary:
        raise ValueError(f"{dist_name} is not pure Python ({binary[0]}); it cannot be carried")
    name = dist.metadata["Name"].replace("-", "_")
    wheel = Path(dest) / f"{name}-{dist.version}-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f.locate(), str(f))
    tmp.replace(wheel)
    return wheel


def box_distributions() -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions the box has: ``BOX`` and everything they require, by
    normalized name. A ``BOX`` entry not installed here is left out (it is absent here, too)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = {
        canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()
    }
    if "onnxruntime" not in installed and "onnxruntime-gpu" in installed:
        installed["onnxruntime"] = installed["onnxruntime-gpu"]  # shown as the CPU build
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [canonicalize_name(n) for n in BOX]
    while todo:
        name = todo.pop()
        if name in found or name not in installed:
            continue
        found[name] = installed[name]
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return found


def emulate(out: Path) -> Path:
    """Build ``out/site`` and ``out/bin`` (module doc); returns ``out``."""
    from packaging.utils import canonicalize_name

    site, bin_dir = Path(out) / "site", Path(out) / "bin"
    site.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, dist in sorted(box_distributions().items()):
        gpu_build = canonicalize_name(dist.metadata["Name"]) != name  # onnxruntime-gpu
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or []}):
            if top in ("..", "__pycache__") or (gpu_build and top.endswith(".dist-info")):
                continue
            source = dist.locate_file(top)
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
        if gpu_build:
            info = site / f"{name}-{dist.version}.dist-info"
            info.mkdir(exist_ok=True)
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist.version}\n"
            )
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(providers=GPU_PROVIDERS))
    _script(bin_dir / "python3", f'exec "{sys.executable}" "$@"\n')
    _script(
        bin_dir / "python",
        'echo "python: not the interpreter with torch on this box; use python3" >&2\nexit 1\n',
    )
    return Path(out)


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


SITECUSTOMIZE = '''"""The GPU box stand-in (tests/gpu/box.py emulate): only PYTHONPATH and the standard library."""
import importlib.machinery
import os
import sys
import sysconfig

_keep = {{os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}}
_stdlib = {{os.path.abspath(sysconfig.get_path(k)) for k in ("stdlib", "platstdlib")}}
sys.path[:] = [
    p
    for p in sys.path
    if os.path.abspath(p) in _keep
    or p.endswith(".zip")
    or any(os.path.abspath(p).startswith(s) and "-packages" not in p for s in _stdlib)
]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
_GPU = {providers!r}


class _CpuOnnxRuntime:
    """onnxruntime as the box's CPU build: no CUDA or TensorRT provider on offer."""

    def find_spec(self, name, path=None, target=None):
        if name != "onnxruntime":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            capi = sys.modules["onnxruntime.capi._pybind_state"]
            cpu = [p for p in capi.get_available_providers() if p not in _GPU]
            capi.get_available_providers = module.get_available_providers = lambda: list(cpu)
            module.get_device = lambda: "CPU"

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _CpuOnnxRuntime())
'''


def main(argv: list[str]) -> int:
    usage = "usage: box.py missing | carried | pack DIR | emulate DIR"
    if argv == ["missing"]:
        print(" ".join(missing()))
        return 0
    if argv == ["carried"]:
        print(" ".join(CARRIED))
        return 0
    if len(argv) == 2 and argv[0] == "pack":
        for name in CARRIED:
            print(pack(name, Path(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "emulate":
        out = emulate(Path(argv[1]))
        print(f"PATH={out / 'bin'}:$PATH PYTHONPATH={out / 'site'}")
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
