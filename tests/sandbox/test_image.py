"""The offline task image: which packages it carries, how its build context is made, and (slow)
that building is idempotent."""

from __future__ import annotations

import uuid
from importlib import metadata

import pytest

from stsc.errors import SandboxError
from stsc.sandbox.image import (
    DEFAULT_MIRROR,
    DEFAULT_PACKAGES,
    DOCKERFILE,
    content_hash,
    ensure_base,
    runtime_closure,
    write_context,
)


def test_the_runtime_closure_holds_the_packages_and_their_requirements():
    names = {d.metadata["Name"].lower() for d in runtime_closure(list(DEFAULT_PACKAGES))}
    assert {"numpy", "pandas", "scikit-learn", "scipy", "flake8"} <= names
    assert {"joblib", "threadpoolctl", "pyflakes", "pycodestyle", "python-dateutil"} <= names
    assert "torch" not in names and "pytest" not in names


def test_a_missing_package_is_named():
    with pytest.raises(SandboxError, match="no-such-package-xyz"):
        runtime_closure(["no-such-package-xyz"])


def test_the_build_context_copies_installed_files_and_console_scripts(tmp_path):
    dists = runtime_closure(["flake8"])
    write_context(dists, tmp_path / "ctx")
    ctx = tmp_path / "ctx"
    assert (ctx / "Dockerfile").read_text() == DOCKERFILE.read_text()
    flake8 = metadata.distribution("flake8")
    assert (ctx / "site-packages" / "flake8" / "__init__.py").exists()
    assert (ctx / "site-packages" / f"flake8-{flake8.version}.dist-info" / "METADATA").exists()
    script = (ctx / "bin" / "flake8").read_text()
    assert script.startswith("#!/usr/bin/python3") and "from flake8.main.cli import main" in script
    assert (ctx / "bin" / "flake8").stat().st_mode & 0o111


def test_the_content_hash_changes_with_versions_base_and_user():
    dists = runtime_closure(["flake8"])
    first = content_hash(dists, "base-a", 1000, 1000)
    assert first == content_hash(dists, "base-a", 1000, 1000)
    assert first != content_hash(dists, "base-b", 1000, 1000)
    assert first != content_hash(dists, "base-a", 1001, 1000)
    assert first != content_hash(runtime_closure(["pyflakes"]), "base-a", 1000, 1000)


@pytest.mark.docker
def test_a_damaged_base_tarball_is_an_error_naming_it_and_what_to_do(tmp_path):
    from tests.sandbox.conftest import require_docker

    require_docker()
    from stsc.config import SandboxConfig
    from stsc.sandbox.docker import connect

    tar = tmp_path / "rootfs-bookworm.tar"
    tar.write_bytes(b"not a tar archive\n" * 64)  # e.g. a download cut short
    tag = f"stsc-test-base:{uuid.uuid4().hex[:8]}"  # missing, so ensure_base imports the tarball
    with pytest.raises(SandboxError, match="--rootfs-tar") as failure:
        ensure_base(connect(SandboxConfig(backend="docker")), tar, DEFAULT_MIRROR, tag=tag)
    assert str(tar) in str(failure.value) and "delete it" in str(failure.value)


@pytest.mark.slow
@pytest.mark.docker
def test_building_the_image_twice_reuses_it(tmp_path):
    from tests.sandbox.conftest import require_docker

    require_docker()
    from stsc.config import SandboxConfig
    from stsc.sandbox.docker import connect
    from stsc.sandbox.image import _default_cache, build_image

    client = connect(SandboxConfig(backend="docker"))
    tar = _default_cache() / "rootfs-bookworm.tar"
    args = ("stsc-task:latest", list(DEFAULT_PACKAGES), 1000, 1000, tar, "http://deb.debian.org/debian")
    first = build_image(client, *args, force=False)
    assert build_image(client, *args, force=False) == first
