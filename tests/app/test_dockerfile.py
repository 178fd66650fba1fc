"""What can be checked of the Dockerfile without a Docker engine."""

from __future__ import annotations

import re
import shlex

from tests.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_copied_files_exist() -> None:
    for args in instructions("COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        if "--from=" in args:
            continue
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_every_package_the_app_imports_is_copied() -> None:
    copied = {p.rstrip("/") for args in instructions("COPY") for p in shlex.split(args)}
    for package in ("api", "app", "bot", "generation", "storage", "stories"):
        assert package in copied, package
    assert "genres.toml" in copied


def test_shape_of_the_image() -> None:
    stages = instructions("FROM")
    assert len(stages) >= 3  # multi-stage
    assert DOCKERFILE.index("requirements.txt") < DOCKERFILE.index("COPY --chown=storybot api/")
    assert "USER storybot" in DOCKERFILE and "HF_HUB_OFFLINE=1" in DOCKERFILE
    assert "EXPOSE 5000" in DOCKERFILE and 'VOLUME ["/data"]' in DOCKERFILE
    assert re.search(r"ARG MODEL_ID=gpt2", DOCKERFILE)
    assert 'CMD ["python", "-m", "bot"]' in DOCKERFILE
    assert "torch==2.13.0" in DOCKERFILE
    assert (REPO / "bot" / "__main__.py").exists() and (REPO / "download_model.py").exists()


def test_compose_uses_the_volume_and_env_file() -> None:
    compose = (REPO / "compose.yaml").read_text()
    assert "env_file: .env" in compose and "/data" in compose and "5000" in compose
