# syntax=docker/dockerfile:1
# storybot: the Discord bot and the HTTP interface.
#   docker build -t storybot .                      GPT-2 baked in (MODEL_ID=gpt2 by default)
#   docker build --build-arg MODEL_ID=distilgpt2 -t storybot .
#   docker build --target slim -t storybot:slim .   no torch, no model: BACKEND=openai,
#                                                   generation on a remote engine (vLLM, ...)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- dependencies first: these layers change only with the requirements files ----
FROM ${PYTHON_IMAGE} AS slim-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements-slim.txt /tmp/requirements-slim.txt
RUN pip install -r /tmp/requirements-slim.txt

FROM slim-deps AS deps
COPY requirements.txt /tmp/requirements.txt
# torch from PyTorch's CPU index: PyPI's default wheel bundles CUDA (several GB).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r /tmp/requirements.txt

# --- the model, downloaded at build time, verified by loading it ----------------
FROM deps AS model
ARG MODEL_ID=gpt2
ARG MODEL_REVISION=
WORKDIR /build
COPY download_model.py ./
COPY generation/ generation/
RUN python download_model.py --model "${MODEL_ID}" --out /models/model \
        ${MODEL_REVISION:+--revision "${MODEL_REVISION}"}

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
ARG TOKENIZER_URL=https://huggingface.co/openai-community/gpt2/resolve/main/tokenizer.json
RUN python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
        "${TOKENIZER_URL}" /app/tokenizer.json
ENV BACKEND=openai \
    OPENAI_TOKENIZER=/app/tokenizer.json
USER storybot

# --- runtime (the default target): GPT-2 and the local engines in the image -------
FROM app AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY --from=model --chown=storybot /models/model /app/models/gpt2
ENV MODEL_DIR=/app/models/gpt2
USER storybot
