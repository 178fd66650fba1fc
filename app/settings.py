"""All configuration in one typed place: the environment, then `.env`.

Every field here has a line in `.env.example`. A missing or invalid value stops
start-up with one line naming the variable (`SettingsError`), and the Discord
token is a `SecretStr`, so it never shows in a repr, a log or an error.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
BackendName = Literal["onnx", "transformers", "openai"]
# generation.dialects.SamplingFields (a test keeps the two alike).
SamplingFields = Literal[
    "auto", "llamacpp", "vllm", "tgi", "transformers", "extra", "generation_config", "none"
]
Precision = Literal["int8", "fp32", "int4"]
LogFormat = Literal["text", "json"]


# An API key this short can be guessed off loopback.
MIN_API_KEY_CHARS = 16
DEFAULT_GENRES = Path("genres.toml")
# The built-in genre file, shipped inside the package (stories/genres.toml links
# to the repository's genres.toml, so a wheel carries a copy).
BUILTIN_GENRES = Path(__file__).resolve().parent.parent / "stories" / "genres.toml"
# The names a loopback server answers to by default.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class SettingsError(Exception):
    """A configuration problem, worded as one line for the operator."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,  # a bad value must not echo a secret into the error
    )

    # Discord. Without a token only the HTTP service starts.
    discord_token: SecretStr | None = None
    discord_dev_guild_id: int | None = None
    # Gateway shards (README, "Several processes"). Empty: Discord says how many
    # (GET /gateway/bot) and this process runs them all. SHARD_IDS: the shards
    # this process runs, like 0,1 (needs SHARD_COUNT); empty: all of them.
    shard_count: int | None = Field(default=None, ge=1, le=100_000)
    shard_ids: str = ""
    # REST requests a second this process may send Discord, all stories
    # together: Discord allows a bot token about 50 over all its processes, so
    # split this between processes. Stream edits give way to new messages and
    # final text, and come less often as load rises.
    discord_requests_per_s: float = Field(default=40.0, gt=0, le=10_000)

    # Model and generation.
    model_dir: Path = Path("models/gpt2")
    # onnx: ONNX Runtime, the fastest on CPU (bench/RESULTS.md); transformers: the
    # torch reference. int8 keeps quality (a test holds it to fp32); fp32: reference;
    # int4 (onnx only): faster, below the quality bar (README, "Speed").
    backend: BackendName = "onnx"
    precision: Precision = "int8"
    # Where BACKEND=transformers runs: auto (a GPU when there is one), cpu, cuda,
    # cuda:1... (int8 is for CPUs: a GPU runs fp32).
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # ONNX Runtime's threads spin-wait up to ONNX_SPIN_US microseconds for the
    # next op before sleeping: awake through one step, asleep between steps, so
    # a lone story is about 30 % faster and nothing collapses when another
    # process wants the cores (bench/RESULTS.md). false: never spin.
    onnx_allow_spinning: bool = True
    onnx_spin_us: int = Field(default=20, ge=1, le=1_000_000)
    # int8 steps one or two stories on a second graph of the same weights (the
    # blocks' matmuls in 8-bit blocks: 10-15 % faster there); false saves its
    # memory (about 125 MB for GPT-2 small) and steps every batch on one graph.
    onnx_small_batch_graph: bool = True
    # BACKEND=openai: a remote OpenAI-compatible server (vLLM, TGI, llama.cpp,
    # transformers serve) does the generating over /v1/completions. The base URL
    # is the API root, like http://vllm:8000/v1.
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None  # default: the one model the server lists
    openai_max_concurrency: int = Field(default=32, ge=1, le=1024)  # requests in flight
    openai_retries: int = Field(default=3, ge=0, le=10)
    openai_connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    openai_read_timeout_s: float = Field(default=120.0, gt=0, le=3600)  # between chunks
    # Whose names top_k, repetition_penalty, no_repeat_ngram_size and
    # min_new_tokens go under: auto finds the engine at start-up; llamacpp, vllm,
    # tgi, transformers name it; extra (common names), none. generation_config
    # is the old name of transformers.
    openai_sampling_fields: SamplingFields = "auto"
    # The remote model's tokenizer.json, to fit long stories exactly; default:
    # MODEL_DIR/tokenizer.json when it exists, else a byte count.
    openai_tokenizer: Path | None = None
    openai_context_size: int = Field(default=1024, ge=16, le=1_000_000)
    # The genre registry an admin edits. When it is genres.toml and the working
    # folder has none (an installed `storybot` run anywhere), the built-in genres
    # that ship inside the package are used.
    genres_path: Path = DEFAULT_GENRES
    # Genre models (fine-tuned) load at their genre's first story; idle ones are
    # unloaded to keep all loaded models within this. A model counts its worst
    # case, every row of a full batch at full context (GPT-2 small int8, 32
    # rows: about 2.6 GB; the KV cache is resident only as far as it is used).
    model_memory_budget_mb: float = Field(default=8000.0, gt=0)
    # Threads for generation, torch's and ONNX Runtime's alike; None: all cores.
    generation_threads: int | None = Field(default=None, ge=1, le=256)
    # The old name of GENERATION_THREADS (it set ONNX Runtime's threads too):
    # still read, with a warning at start-up.
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    # Requests generated together: a batch grows with the requests waiting, up to
    # this. 32 at random arrivals: 1.35x the throughput of 8 and a third of its
    # p95 latency (bench/RESULTS.md); a lone request still runs at batch 1.
    max_batch_size: int = Field(default=32, ge=1, le=64)
    queue_size: int = Field(default=32, ge=1, le=10_000)
    max_new_tokens_limit: int = Field(default=400, ge=1, le=1000)
    generation_timeout_s: float = Field(default=600.0, gt=0)
    # On SIGTERM, stories being written get this long to finish (queued ones are
    # marked interrupted at once); the process exits within about 2 s more.
    # Docker sends SIGKILL 10 s after SIGTERM (compose: stop_grace_period).
    shutdown_grace_s: float = Field(default=8.0, ge=0, le=600)

    # Storage: a SQLite file (the default), or a database that several storybot
    # processes share: DATABASE_URL=postgresql://user:password@host:5432/storybot
    # (sqlite:///relative/path and sqlite:////absolute/path name a SQLite file).
    # DATABASE_URL, when set, wins over DATABASE_PATH.
    database_path: Path = Path("data/storybot.sqlite3")
    database_url: SecretStr | None = None  # may hold a password
    database_pool_size: int = Field(default=10, ge=1, le=500)  # PostgreSQL connections
    # This process's name in the runs it writes: at start-up it recovers only its
    # own unfinished runs (on PostgreSQL; SQLite has one process). Give each
    # process its own, stable across restarts; empty: host name and process id.
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:@-]{1,100}$")

    # HTTP interface (the old Flask service's contract on port 5000). false: no
    # HTTP interface in this process (another one serves it; needs DISCORD_TOKEN).
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=5000, ge=0, le=65535)
    http_api_key: SecretStr | None = None
    http_cors_origins: str = ""  # comma-separated origins; empty = CORS off
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Host names the server answers to (comma-separated; "*" = any). Empty: the
    # loopback names and HTTP_HOST, so a web page that rebinds its own name to
    # this address cannot read the answers.
    http_allowed_hosts: str = ""
    # A request's headers and body must arrive within this; idle keep-alive
    # connections close after it too.
    http_read_timeout_s: float = Field(default=20.0, gt=0, le=600)
    # Open connections at most; past it a new one gets 503 and is closed.
    http_max_connections: int = Field(default=1000, ge=1, le=100_000)
    # Where people reach the HTTP interface from outside (a proxy, a domain):
    # share links start with it. None: http://HTTP_HOST:HTTP_PORT.
    public_base_url: str | None = None

    # Fairness.
    user_max_active: int = Field(default=2, ge=1, le=100)
    user_cooldown_s: float = Field(default=10.0, ge=0)

    log_level: LogLevel = "INFO"

    # Logs and metrics (README, "Metrics and logs").
    # text: readable lines; json: one JSON object a line (time, level, logger,
    # message, request_id, story_id, guild_id).
    log_format: LogFormat = "text"
    # One INFO line per HTTP request (method, path, status, time; never a body).
    http_access_log: bool = True
    # GET /metrics in the Prometheus text format, behind HTTP_API_KEY like the
    # other routes; false: no metrics are kept at all.
    metrics_enabled: bool = True
    # Serve /metrics on this port of 127.0.0.1 instead (no key there, loopback
    # host names only); empty: on the HTTP interface.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator(
        "discord_token",
        "http_api_key",
        "openai_api_key",
        "openai_base_url",
        "openai_model",
        "openai_tokenizer",
        "public_base_url",
        "database_url",
        "instance_id",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "discord_dev_guild_id",
        "generation_threads",
        "torch_threads",
        "metrics_port",
        "shard_count",
        mode="before",
    )
    @classmethod
    def _blank_int_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _metrics_port_of_its_own(self) -> Settings:
        if self.metrics_port and self.metrics_port == self.http_port:
            raise ValueError(
                f"METRICS_PORT={self.metrics_port} is HTTP_PORT too: choose another port, "
                "or leave METRICS_PORT empty to serve /metrics on the HTTP interface"
            )
        return self

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        ids = self.shards  # raises on a malformed list
        if ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT, the number of shards in all")
        wrong = [i for i in ids if i >= self.shard_count]
        if wrong:
            raise ValueError(
                f"SHARD_IDS: shard {wrong[0]} does not exist with SHARD_COUNT={self.shard_count} "
                f"(shards are numbered 0 to {self.shard_count - 1})"
            )
        return self

    @property
    def shards(self) -> list[int] | None:
        """SHARD_IDS as a list, or None for every shard."""
        if not self.shard_ids.strip():
            return None
        try:
            ids = [int(part) for part in self.shard_ids.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"SHARD_IDS must be shard numbers separated by commas, like 0,1 "
                f"(got {self.shard_ids!r})"
            ) from None
        if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise ValueError("SHARD_IDS must name each shard once, from 0 up")
        return ids

    @model_validator(mode="after")
    def _something_to_serve(self) -> Settings:
        if not self.http_enabled and self.discord_token is None:
            raise ValueError(
                "HTTP_ENABLED=false needs DISCORD_TOKEN: without either there is nothing to serve"
            )
        return self

    @property
    def secrets(self) -> list[str]:
        """The secrets' values, for the log formatter to keep out of every line."""
        values = (self.discord_token, self.http_api_key, self.openai_api_key)
        found = [value.get_secret_value() for value in values if value is not None]
        # DATABASE_URL's password only: the rest says where the stories are, and
        # storage writes the URL with *** for the password.
        url = self.database_url.get_secret_value() if self.database_url else ""
        password = urlsplit(url).password
        return found + ([password] if password else [])

    @model_validator(mode="after")
    def _api_key_off_loopback(self) -> Settings:
        if not is_loopback(self.http_host) and self.http_api_key is None:
            raise ValueError(
                f"HTTP_HOST={self.http_host} is not a loopback address, so HTTP_API_KEY is required"
            )
        key = self.http_api_key.get_secret_value() if self.http_api_key else ""
        if not is_loopback(self.http_host) and len(key) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"HTTP_API_KEY must be at least {MIN_API_KEY_CHARS} characters when HTTP_HOST "
                "is not a loopback address (make one: python -c "
                "'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self

    @field_validator("openai_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, like http://127.0.0.1:8000/v1")
        return value.strip().rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        scheme = urlsplit(text).scheme
        if scheme in ("postgresql", "postgres"):
            if not urlsplit(text).hostname and "host=" not in text:
                raise ValueError("a postgresql:// URL names its host: postgresql://user@host/db")
        elif not (scheme == "sqlite" and text.startswith("sqlite:///") and len(text) > 10):
            raise ValueError(
                "must be postgresql://user:password@host:5432/database, or "
                "sqlite:///relative/path or sqlite:////absolute/path"
            )
        return SecretStr(text)

    @property
    def database(self) -> Path | str:
        """Where the stories are: a SQLite file's path, or a postgresql:// URL."""
        if self.database_url is None:
            return self.database_path
        url = self.database_url.get_secret_value()
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:") else url

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, like https://stories.example.org")
        if parts.query or parts.fragment:
            raise ValueError("must be a URL without ?query or #fragment")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> Settings:
        if self.backend == "openai" and self.openai_base_url is None:
            raise ValueError(
                "BACKEND=openai needs OPENAI_BASE_URL, the server's API root, like http://host:8000/v1"
            )
        return self

    @model_validator(mode="after")
    def _packaged_genres(self) -> Settings:
        if self.genres_path == DEFAULT_GENRES and not self.genres_path.exists():
            self.genres_path = BUILTIN_GENRES
        return self

    @model_validator(mode="after")
    def _int4_is_onnx_only(self) -> Settings:
        if self.precision == "int4" and self.backend != "onnx":
            raise ValueError("PRECISION=int4 is for BACKEND=onnx only")
        return self

    @model_validator(mode="after")
    def _old_names(self) -> Settings:
        if self.generation_threads is None and self.torch_threads is not None:
            self.generation_threads = self.torch_threads
        return self

    @property
    def deprecations(self) -> list[str]:
        """One line per old setting name in use, for the start-up log."""
        if self.torch_threads is None:
            return []
        wins = self.generation_threads != self.torch_threads
        return [
            "TORCH_THREADS is deprecated (it sets ONNX Runtime's threads too): "
            "rename it GENERATION_THREADS" + (" (which is set too, and wins)" if wins else "")
        ]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.http_cors_origins.split(",") if o.strip()]

    @property
    def share_base_url(self) -> str:
        """PUBLIC_BASE_URL, or the address the HTTP interface listens on."""
        if self.public_base_url is not None:
            return self.public_base_url
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def allowed_hosts(self) -> list[str]:
        """HTTP_ALLOWED_HOSTS, or the loopback names plus HTTP_HOST when it
        names one address (not a wildcard such as 0.0.0.0)."""
        hosts = [h.strip() for h in self.http_allowed_hosts.split(",") if h.strip()]
        if hosts:
            return hosts
        hosts = list(LOOPBACK_NAMES)
        if self.http_host not in ("", "0.0.0.0", "::") and self.http_host not in hosts:
            hosts.append(self.http_host)
        return hosts


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if not loc:
        return message
    return f"{'_'.join(loc).upper()}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise `SettingsError` with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
