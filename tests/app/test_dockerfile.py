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
    names = [stage.split()[-1] for stage in stages]
    assert names[-1] == "runtime" and "slim" in names  # full image by default; --target slim
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


def test_the_slim_image_has_no_torch() -> None:
    slim = (REPO / "requirements-slim.txt").read_text()
    assert not re.search(r"^(torch|transformers|onnxruntime|onnx)\b", slim, re.M)
    assert "-r requirements-slim.txt" in (REPO / "requirements.txt").read_text()
    stage = DOCKERFILE[DOCKERFILE.index("AS slim\n") :]
    stage = stage[: stage.index("FROM ")]
    assert "--from=slim-deps" in stage and "--from=deps" not in stage
    assert "BACKEND=openai" in stage and "USER storybot" in stage


def test_compose_gpu_profile_serves_gpt2_with_vllm_next_to_a_slim_bot() -> None:
    import yaml

    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    vllm, bot = services["vllm"], services["storybot-remote"]
    assert vllm["profiles"] == ["gpu"] == bot["profiles"]
    assert "vllm" in vllm["image"] and "gpt2" in " ".join(vllm["command"])
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert bot["build"]["target"] == "slim"
    assert bot["environment"]["BACKEND"] == "openai"
    assert bot["environment"]["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert bot["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert "profiles" not in services["storybot"]  # the CPU bot stays the default
