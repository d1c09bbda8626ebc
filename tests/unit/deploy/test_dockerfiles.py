"""A light Dockerfile lint (hadolint is not available): pinned bases, a non-root user,
no secrets, sources that exist, a healthcheck, torch pinned to the project's version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.deploy.conftest import COMPOSE, ROOT

DOCKERFILES = sorted(COMPOSE.glob("Dockerfile.*[!e]"))  # not the .dockerignore files


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.gateway", "Dockerfile.worker"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned(path: Path) -> None:
    for op, rest in _instructions(path):
        if op == "FROM":
            image = rest.split()[0]
            tag = image.partition(":")[2]
            assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user(path: Path) -> None:
    users = [rest for op, rest in _instructions(path) if op == "USER"]
    assert users, "no USER: the process would run as root"
    assert users[-1] not in ("root", "0", "0:0")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_baked_in(path: Path) -> None:
    for op, rest in _instructions(path):
        if op in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY)\w*\s*=", rest, re.IGNORECASE), rest
        assert not (op == "ADD" and "://" in rest), "ADD of a URL: fetch at build time, unpinned"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(path: Path) -> None:
    for op, rest in _instructions(path):
        if op == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_has_healthcheck_and_no_entrypoint_that_compose_commands_would_repeat(path: Path) -> None:
    ops = dict(_instructions(path))
    assert "HEALTHCHECK" in ops
    assert ops.get("ENTRYPOINT", "[]") == "[]", "compose commands start with 'rtserver': keep ENTRYPOINT empty"
    assert ops["CMD"].startswith('["rtserver"')


def test_worker_installs_the_gpu_extra_with_pinned_torch() -> None:
    runs = " ".join(rest for op, rest in _instructions(COMPOSE / "Dockerfile.worker") if op == "RUN")
    assert re.search(r'"\.\[gpu(,\w+)*\]"', runs)
    pyproject = (ROOT / "pyproject.toml").read_text()
    gpu = re.search(r"^gpu = \[(.*?)\]", pyproject, re.DOTALL | re.MULTILINE)
    assert gpu and '"torch==2.13.0"' in gpu.group(1)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_trimmed_but_keeps_every_copied_source(path: Path) -> None:
    ignore = [ln for ln in path.with_name(path.name + ".dockerignore").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert ignore[0] == "**", "ignore everything (.venv, .git, models), then allow what the image needs"
    for op, rest in _instructions(path):
        if op == "COPY":
            for source in rest.split()[:-1]:
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, f"{source} is excluded from the context"
