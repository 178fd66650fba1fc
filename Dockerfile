# syntax=docker/dockerfile:1
# storybot: the Discord bot and the HTTP interface.
#   docker build -t storybot .                      GPT-2 baked in (MODEL_ID=gpt2 by default)
#   docker build --build-arg MODEL_ID=distilgpt2 -t storybot .
#   docker build --target slim -t storybot:slim .   no torch, no model: BACKEND=openai,
#                                                   generation on a remote engine (vLLM, ...)
#
# What each target downloads at build time, besides the base image (PYTHON_IMAGE):
#   slim     the pip packages of requirements-slim.txt, from PyPI; and GPT-2's
#            tokenizer.json (about 1.4 MB) from the Hugging Face Hub (TOKENIZER_URL),
#            so long stories are fitted to the remote model's context exactly.
#   runtime  the pip packages of requirements.txt, from PyPI; the torch CPU wheel
#            (about 190 MB) from PyTorch's CPU index; and the model (MODEL_ID, GPT-2
#            by default: weights, tokenizer and config, about 550 MB) from the
#            Hugging Face Hub, by download_model.py. No tokenizer.json download: the
#            model's own is in its folder.
# At run time neither image reaches for the Hub (HF_HUB_OFFLINE=1).
#
# Stage order matters: the classic builder (DOCKER_BUILDKIT=0) builds every stage
# before the target, in file order. slim's stages come first, so --target slim
# builds no torch and downloads no model; runtime, last, is the default target.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- dependencies first: these layers change only with the requirements files ----
FROM ${PYTHON_IMAGE} AS slim-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-slim.txt /tmp/requirements-slim.txt
RUN pip install --require-hashes -r /tmp/requirements-slim.txt

# --- the application, shared by both images --------------------------------------
FROM ${PYTHON_IMAGE} AS app
RUN useradd --create-home --uid 10001 storybot \
 && mkdir -p /data && chown storybot /data
WORKDIR /app
COPY --chown=storybot genres.toml download_model.py ./
COPY --chown=storybot api/ api/
COPY --chown=storybot app/ app/
COPY --chown=storybot bot/ bot/
COPY --chown=storybot generation/ generation/
COPY --chown=storybot storage/ storage/
COPY --chown=storybot stories/ stories/
# Never reach for the Hub at run time.
# HTTP_HOST=0.0.0.0 publishes the HTTP interface, so HTTP_API_KEY must be set
# (start-up refuses without it).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    DATABASE_PATH=/data/storybot.sqlite3 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=5000
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]

# --- slim: the bot on a remote engine (set OPENAI_BASE_URL) ---------------------
FROM app AS slim
COPY --from=slim-deps /opt/venv /opt/venv
# The remote model's tokenizer, so long stories are fitted to its context exactly.
# DL3064 (sensitive data in ARG/ENV) fires on the "TOKEN" in these names: they hold
# a public URL and a file path, no secret.
# hadolint ignore=DL3064
ARG TOKENIZER_URL=https://huggingface.co/openai-community/gpt2/resolve/main/tokenizer.json
RUN python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
        "${TOKENIZER_URL}" /app/tokenizer.json
# hadolint ignore=DL3064
ENV BACKEND=openai \
    OPENAI_TOKENIZER=/app/tokenizer.json
# The uid useradd gave storybot above: numeric, so the host and Kubernetes'
# runAsNonRoot can tell it is not root without reading the image's /etc/passwd.
USER 10001

# --- torch and the runtime's packages: only the runtime target builds these ------
FROM slim-deps AS deps
COPY requirements.txt /tmp/requirements.txt
# torch from PyTorch's CPU index: PyPI's default wheel bundles CUDA (several GB).
# It is installed by name, outside the hashed lock (why: scripts/lock.sh); its own
# dependencies are in the lock, hashed, hence --no-deps here.
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --require-hashes -r /tmp/requirements.txt

# --- the model, downloaded at build time, verified by loading it ----------------
FROM deps AS model
ARG MODEL_ID=gpt2
ARG MODEL_REVISION=
WORKDIR /build
COPY download_model.py ./
COPY generation/ generation/
RUN python download_model.py --model "${MODEL_ID}" --out /models/model \
        ${MODEL_REVISION:+--revision "${MODEL_REVISION}"}

# --- runtime (the default target): GPT-2 and the local engines in the image -------
FROM app AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY --from=model --chown=storybot /models/model /app/models/gpt2
ENV MODEL_DIR=/app/models/gpt2
# storybot's uid (see slim).
USER 10001
