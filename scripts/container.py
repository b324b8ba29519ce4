"""``make container``: build a config's Bento, then its OCI image with ``bentoml containerize``; the image
reference is the last line printed.

The backend is Docker where its daemon answers, else podman, else buildah (``make container-tools`` installs
the last two, with runc and mmdebstrap, on Debian as root). The build gets the builder's pip configuration the
way ``make install`` does (``bento_image.pip_sources`` writes its indexes into the Bento's requirements): with
podman or buildah, the local folders those name (``find-links``, ``file://`` indexes) and the CA bundle pip is
told to trust (``cert``) are mounted read-only into the build at the same paths.

Where the base image the Bento's Dockerfile names cannot be pulled (no registry access), a local stand-in is
built and tagged with that name (``base_standin``), and said so: users with a registry get the real base.
Usage: ``python scripts/container.py [--config configs/default.yaml]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import bentoml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from base_standin import build_standin  # noqa: E402  (beside this script)

from bento_image import pip_config, pip_sources  # noqa: E402

# podman's default open-files limit for containers is above what some hosts (sandboxes) allow; this file
# leaves containers the runtime's limits. Used only where CONTAINERS_CONF is not set already.
CONTAINERS_CONF = ROOT / "container" / "containers.conf"
CA_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle, which the base image has


def say(message: str) -> None:
    print(f">>> {message}", flush=True)


def answers(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def backend() -> str:
    if shutil.which("docker") and answers("docker", "info"):
        return "docker"
    for name in ("podman", "buildah"):
        if shutil.which(name):
            return name
    sys.exit("no container builder: install Docker, or podman (`make container-tools` as root on Debian)")


def bentoml_cli(*args: str) -> str:
    command = [str(Path(sys.executable).parent / "bentoml"), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def build_bento(config: str) -> str:
    say(f"building the Bento for {config}")
    output = bentoml_cli("build", "--arg", f"config={config}", "--output", "tag")
    found = re.search(r"__tag__:(\S+)", output)
    if not found:
        sys.exit(f"bentoml build printed no tag:\n{output}")
    return found[1]


def base_image(bento_tag: str) -> str:
    path = Path(bentoml_cli("get", bento_tag, "--output", "path").strip()) / "env" / "docker" / "Dockerfile"
    return next(line.split()[1] for line in path.read_text().splitlines() if line.startswith("FROM "))


def has_image(tool: str, image: str) -> bool:
    """In local storage already (``images --quiet`` is the one spelling docker, podman and buildah share)."""
    listed = subprocess.run([tool, "images", "--quiet", image], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def ensure_base(tool: str, image: str) -> None:
    """The base image, pulled; where no registry answers (podman/buildah only), the local stand-in."""
    if tool == "docker" or has_image(tool, image) or answers(tool, "pull", "-q", image):
        return
    say(f"{image} cannot be pulled here (no registry access): building a LOCAL STAND-IN for it (Debian bookworm's")
    say("Python 3.11 from mmdebstrap, tagged with that name). It is for this machine only; nothing in the Bento")
    say("depends on it, and with registry access the real image is pulled instead.")
    build_standin(image)


def local_paths(config: dict[str, str]) -> list[str]:
    """Folders the builder's pip configuration names on this machine: ``find-links`` folders, and the folder around
    a ``file://`` index (its pages link to files beside ``simple/``, e.g. ``../files/``)."""
    paths = []
    for option in pip_sources(config):
        flag, location = option.split(maxsplit=1)
        url = urlparse(location)
        if url.scheme in ("", "file") and Path(url.path).exists():
            paths.append(url.path if flag == "--find-links" else str(Path(url.path).parent))
    return list(dict.fromkeys(paths))


def build_options(tool: str) -> dict[str, Any]:
    """Keyword arguments for ``bentoml.container.build`` (what ``bentoml containerize`` calls; its ``--opt`` joins
    a repeated ``volume`` into one): the pip configuration's local paths and CA bundle, mounted read-only."""
    config = pip_config()
    if tool == "docker":
        if local_paths(config):
            say("note: Docker builds cannot mount the local package folders pip is configured with; use an index")
        return {}
    volumes = [f"{path}:{path}:ro" for path in local_paths(config)]
    env = []
    if (cert := config.get("cert")) and Path(cert).is_file():
        # The bundle replaces the image's during the build; pip reads PIP_CERT, uv SSL_CERT_FILE (both name the
        # image's own bundle, so the image keeps working with them).
        volumes.append(f"{cert}:{CA_IN_IMAGE}:ro")
        env = [f"PIP_CERT={CA_IN_IMAGE}", f"SSL_CERT_FILE={CA_IN_IMAGE}"]
    return {"network": "host", "volume": volumes, "env": env}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    args = parser.parse_args()
    tool = backend()
    if tool != "docker":
        os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    tag = build_bento(args.config)
    ensure_base(tool, base_image(tag))
    image = tag  # bento-oai:<version>, as containerize names it by default
    say(f"containerizing {tag} with {tool}")
    # Its overloads type `volume` as one mount; a list becomes one `--volume` flag per mount.
    build: Callable[..., Any] = bentoml.container.build
    build(tag, backend=tool, image_tag=(image,), **build_options(tool))
    print(image)


if __name__ == "__main__":
    main()
