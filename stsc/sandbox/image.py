"""Build the Docker task image without any container registry.

Command (idempotent; rebuilds only when the Dockerfile, the packages or the base change)::

    python -m stsc.sandbox.image [--tag stsc-task:latest] [--package NAME ...] [--uid 1000 --gid 1000]
                                 [--rootfs-tar FILE] [--mirror URL] [--cache-dir DIR] [--force]

1. Base image ``stsc-rootfs:bookworm`` (made only if missing): a Debian bookworm root file system
   (Python 3.11) from ``debootstrap --variant=minbase --include=python3,procps,ca-certificates``
   (needs root and Debian's package mirror; cached as ``<cache-dir>/rootfs-bookworm.tar``, or given
   with ``--rootfs-tar``), loaded with ``docker import``.
2. Build context: ``stsc/sandbox/Dockerfile`` plus the task runtime's packages copied from this
   Python environment with their dependency closure, at exactly the versions stsc itself uses
   (default ``numpy pandas scikit-learn scipy flake8``), and their console scripts.
3. ``docker build`` (classic builder, no network): user ``--uid:--gid`` (non-root) with home
   /home/agent and workspace /home/agent/workspace; the build fails unless the packages import.

The image runs this environment's wheels, so it must be built from a CPython 3.11 environment.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from stsc.errors import SandboxError

log = logging.getLogger(__name__)

DOCKERFILE = Path(__file__).with_name("Dockerfile")
DEFAULT_TAG = "stsc-task:latest"
BASE_TAG = "stsc-rootfs:bookworm"
DEFAULT_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "flake8")
ROOTFS_PACKAGES = ("python3", "procps", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CONTENT_LABEL = "org.stsc.content"
_PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def runtime_closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need (their unconditional requirements, recursively),
    sorted by name. Raises ``SandboxError`` naming a package that is not installed."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = _canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SandboxError(
                f"package {name!r} is not installed in {sys.prefix}; pip install it first"
            ) from None
        found[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [found[k] for k in sorted(found)]


def _top_levels(dist: metadata.Distribution) -> set[str]:
    """Top-level entries of site-packages a distribution installed (scripts outside it excluded)."""
    tops = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first not in ("..", "__pycache__"):
            tops.add(first)
    return tops


def _write_script(bin_dir: Path, entry: metadata.EntryPoint) -> None:
    head = entry.attr.split(".")[0]
    path = bin_dir / entry.name
    path.write_text(
        f"#!/usr/bin/python3\nimport sys\nfrom {entry.module} import {head}\n\n"
        f'if __name__ == "__main__":\n    sys.exit({entry.attr}())\n'
    )
    path.chmod(0o755)


def write_context(dists: list[metadata.Distribution], dest: Path) -> None:
    """Fill a build context: the Dockerfile, ``site-packages/`` and ``bin/``."""
    site, bin_dir = dest / "site-packages", dest / "bin"
    site.mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy2(DOCKERFILE, dest / "Dockerfile")
    for dist in dists:
        root = Path(str(dist.locate_file("")))
        for top in sorted(_top_levels(dist)):
            src = root / top
            if src.is_dir():
                shutil.copytree(src, site / top, symlinks=True, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, site / top)
        for entry in dist.entry_points.select(group="console_scripts"):
            _write_script(bin_dir, entry)


def content_hash(dists: list[metadata.Distribution], base_id: str, uid: int, gid: int) -> str:
    h = hashlib.sha256(DOCKERFILE.read_bytes())
    for dist in dists:
        h.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    h.update(f"{base_id} {uid}:{gid}".encode())
    return h.hexdigest()[:16]


def build_rootfs(tar_path: Path, mirror: str) -> None:
    """debootstrap a minimal bookworm with Python 3.11 and pack it as ``tar_path``."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed (apt-get install debootstrap), or pass --rootfs-tar")
    if os.geteuid() != 0:
        raise SandboxError("debootstrap needs root: run this command as root once, or pass --rootfs-tar")
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stsc-rootfs-") as tmp:
        root = Path(tmp) / "root"
        log.info("debootstrap bookworm into %s (about a minute)", root)
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(ROOTFS_PACKAGES)}",
            "bookworm",
            str(root),
            mirror,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SandboxError(
                f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        for rel in _PRUNED:
            shutil.rmtree(root / rel, ignore_errors=True)
            (root / rel).mkdir(parents=True, exist_ok=True)
        partial = tar_path.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.replace(tar_path)


def ensure_base(client: Any, tar_path: Path, mirror: str, tag: str = BASE_TAG) -> str:
    """The id of the base image ``tag``, importing it (and making its tarball) when missing. Raises
    ``SandboxError`` when the engine cannot import the tarball (damaged, or not a tar archive)."""
    import docker

    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        pass
    if not tar_path.exists():
        build_rootfs(tar_path, mirror)
    repo, name = tag.rsplit(":", 1)
    log.info("importing %s as %s", tar_path, tag)
    try:
        client.api.import_image_from_file(str(tar_path), repository=repo, tag=name)
        return client.images.get(tag).id
    except docker.errors.APIError as e:
        raise SandboxError(
            f"docker import of {tar_path} as {tag} failed: {e.explanation or e}. If it is the cached "
            "debootstrap tarball, delete it and run this command again as root to make a new one; "
            "otherwise pass --rootfs-tar a tarball of a root file system"
        ) from e


def build_image(
    client: Any, tag: str, packages: list[str], uid: int, gid: int, rootfs_tar: Path, mirror: str, force: bool
) -> str:
    """Build (or reuse) the task image; returns its id. Raises ``SandboxError`` with the build log."""
    import docker

    if sys.version_info[:2] != (3, 11):
        raise SandboxError(
            f"the task image runs Python 3.11 but this is {sys.version.split()[0]}; use a 3.11 venv"
        )
    dists = runtime_closure(packages)
    base_id = ensure_base(client, rootfs_tar, mirror)
    digest = content_hash(dists, base_id, uid, gid)
    if not force:
        try:
            image = client.images.get(tag)
            if image.labels.get(CONTENT_LABEL) == digest:
                log.info("%s is up to date (%s)", tag, digest)
                return image.id
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="stsc-image-") as tmp:
        write_context(dists, Path(tmp))
        log.info(
            "building %s from %d packages: %s", tag, len(dists), ", ".join(d.metadata["Name"] for d in dists)
        )
        try:
            image, _ = client.images.build(
                path=tmp,
                tag=tag,
                buildargs={"BASE": BASE_TAG, "UID": str(uid), "GID": str(gid)},
                labels={CONTENT_LABEL: digest},
                network_mode="none",
                pull=False,
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as e:
            lines = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in e.build_log)
            raise SandboxError(f"docker build of {tag} failed: {e.msg}\n{lines[-4000:]}") from e
    return image.id


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stsc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stsc.sandbox.image", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help="image name (sandbox.image)")
    parser.add_argument(
        "--package", action="append", help=f"runtime package (repeatable; default {DEFAULT_PACKAGES})"
    )
    parser.add_argument("--uid", type=int, default=1000, help="uid of the sandbox user (sandbox.user)")
    parser.add_argument("--gid", type=int, default=1000)
    parser.add_argument("--rootfs-tar", type=Path, help="a prepared root file system tarball")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help="Debian mirror for debootstrap")
    parser.add_argument("--cache-dir", type=Path, default=_default_cache())
    parser.add_argument(
        "--docker-host", default=None, help="engine URL (default: DOCKER_HOST or the local socket)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the image is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from stsc.config import SandboxConfig
    from stsc.sandbox.docker import connect

    try:
        client = connect(SandboxConfig(docker_host=args.docker_host))
        tar = args.rootfs_tar or args.cache_dir / "rootfs-bookworm.tar"
        packages = args.package or list(DEFAULT_PACKAGES)
        image_id = build_image(client, args.tag, packages, args.uid, args.gid, tar, args.mirror, args.force)
    except SandboxError as e:
        log.error("%s", e)
        return 1
    log.info("%s %s", args.tag, image_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
