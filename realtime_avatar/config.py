"""Settings: ``avatar.yaml`` beside this module (defaults + the selected profile), then env overrides.

Precedence, highest first: constructor arguments, ``AVATAR_*`` environment variables, the profile,
the defaults. ``AVATAR_CONFIG`` points at another YAML file of the same shape.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from realtime_avatar.costs import CostSettings

DEFAULT_CONFIG = Path(__file__).resolve().parent / "avatar.yaml"
SUPPORTED_LANGUAGES = ("en", "zh", "es")
SUPPORTED_SIZES = (256, 360)


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) else text


def _expand(value: Any, places: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    for placeholder, path in places.items():
        value = value.replace(placeholder, path)
    return value


class EngineSpec(BaseModel):
    """An engine by registry name (or ``module:Class``) with its constructor options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    # Fraction of the one GPU this stage's Serve deployment reserves (num_gpus); None on the CPU.
    gpu_share: float | None = Field(default=None, ge=0, le=1)

    @field_validator("options")
    @classmethod
    def _typed_env_values(cls, options: dict[str, Any]) -> dict[str, Any]:
        # Environment overrides arrive as strings; read them as YAML scalars ("1" -> 1, "true" -> True).
        return {k: _scalar(v) if isinstance(v, str) else v for k, v in options.items()}


class RenderSettings(BaseModel):
    size: int = 256
    fps: int = 25
    seed: int = 0
    crf: int = 23
    # Streaming (Serve): frames leave the avatar stage in parts of this many seconds, and a streamed
    # MP4 gets a keyframe, hence a fragment, this often. Smaller: an earlier first fragment.
    part_seconds: float = Field(default=0.5, gt=0)
    fragment_seconds: float = Field(default=0.5, gt=0)

    @field_validator("size")
    @classmethod
    def _supported_size(cls, size: int) -> int:
        if size not in SUPPORTED_SIZES:
            raise ValueError(f"size must be one of {SUPPORTED_SIZES}")
        return size


class Limits(BaseModel):
    max_text_chars: dict[str, int] = Field(default_factory=lambda: {"en": 1000, "es": 1000, "zh": 400})
    min_voice_seconds: float = 2.0
    max_voice_seconds: float = 60.0
    max_upload_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000
    max_asr_seconds: float = 120.0
    # POST /v1/avatars' optional reference video (the owner's own motion): its length and size.
    min_motion_video_seconds: float = Field(default=10.0, gt=0)
    max_motion_video_seconds: float = Field(default=60.0, gt=0)
    max_motion_video_bytes: int = Field(default=30_000_000, ge=1)
    # A JSON request body (render, tts, chat) larger than this is refused (413) before it is parsed.
    max_json_bytes: int = Field(default=65_536, ge=1024)
    # Slow clients (deployments.edge, in Serve's proxy): a request body must arrive whole within
    # body_timeout_s (else 408); one client address may send this many bodies at once (429 past it),
    # and all clients together this many (503), so half-sent uploads cannot hold the API.
    body_timeout_s: float = Field(default=60.0, gt=0)
    max_uploads_per_client: int = Field(default=4, ge=1)
    max_uploads_in_progress: int = Field(default=64, ge=1)


class StageServing(BaseModel):
    """One Serve deployment's share of the machine and its admission limits."""

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.25, ge=0)
    # Requests a replica works on at once; past that, up to max_queued_requests wait per caller, and
    # anything more is refused at once (HTTP 503 + Retry-After) instead of hanging. -1: no limit.
    max_ongoing_requests: int = Field(default=2, ge=1)
    max_queued_requests: int = Field(default=4, ge=-1)
    # A call into this stage (one request's TTS stream, render, transcription...) ends with 504
    # stage_timeout after this long, and the replica stops its work after the step in hand. None: no limit.
    call_timeout_s: float | None = Field(default=None, gt=0)
    # Admission by cost: a replica takes a request only while the cost of what it has in flight stays
    # within this budget (1.0 = one request at the stage's limit: text at max_text_chars, audio at
    # max_asr_seconds); an idle replica takes any request. Past it: 503 overloaded. None: no budget.
    max_cost: float | None = Field(default=None, gt=0)


# Deployments that are not model stages: the HTTP ingress and the conversation (sessions) deployment.
SERVICE_DEPLOYMENTS = ("ingress", "conversation", "realtime")


class ServeSettings(BaseModel):
    """The Ray Serve graph: per-deployment resources (GPU shares come from each engine's gpu_share).

    ``deployments`` has one entry per model stage in ``Settings.stages`` plus the service deployments.
    """

    deployments: dict[str, StageServing] = Field(default_factory=dict)
    retry_after_s: float = Field(default=2.0, gt=0)  # the Retry-After hint on 503s
    ready_timeout_s: float = Field(default=5.0, gt=0)  # /readyz waits this long for each stage
    unhealthy_after_failures: int = Field(default=3, ge=1)  # internal errors in a row -> restart
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    # Ray's shared-memory object store (MB); None: Ray's default (30% of memory). In a container it must
    # fit in /dev/shm (the Cloud Run memory volume, compose's shm_size), or Ray falls back to slow /tmp.
    object_store_mb: int | None = Field(default=None, ge=75)
    # On SIGTERM, calls in flight get this long to finish before the process exits anyway (Cloud Run
    # kills the container 10 s after SIGTERM, so the l4 profile keeps it under that).
    drain_timeout_s: float = Field(default=8.0, gt=0)
    # Optional bearer key for every route but /healthz and /readyz (401 without it); None: open, as a
    # laptop's loopback-only server is. Browser requests (an Origin header) must come from the API's own
    # loopback origin or one of allowed_origins (403 otherwise).
    api_key: str | None = Field(default=None, repr=False)
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("api_key")
    @classmethod
    def _no_blank_key(cls, key: str | None) -> str | None:
        return (key.strip() or None) if key is not None else None

    @field_validator("allowed_origins")
    @classmethod
    def _bare_origins(cls, origins: list[str]) -> list[str]:
        return [o.strip().rstrip("/").lower() for o in origins if o.strip()]


class ChatSettings(BaseModel):
    """Conversation sessions (``realtime_avatar.conversation``): memory, caps and reply length."""

    max_sessions: int = Field(default=16, ge=1)  # concurrent sessions; one more is a 503
    idle_ttl_s: float = Field(default=600.0, gt=0)  # a session idle this long is gone (410)
    max_session_minutes: float = Field(default=30.0, gt=0)
    max_turns: int = Field(default=50, ge=1)
    max_message_chars: int = Field(default=500, ge=1)  # a longer user message is a 413
    # Prompt budget: system prompt + kept history + the new message must fit in this many tokens
    # (capped by the model's own context less the reply); oldest turns are dropped first.
    history_tokens: int = Field(default=1024, ge=64)
    reply_max_sentences: int = Field(default=3, ge=1)
    reply_max_tokens: int = Field(default=96, ge=8)
    # The reply's first clause goes to TTS alone once a comma ends it past this many characters (an
    # earlier first clip); 0: first clauses wait like the rest.
    first_clause_chars: int = Field(default=8, ge=0)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    llm_timeout_s: float = Field(default=30.0, gt=0)  # no delta for this long: the LLM is down (503)
    # Nothing of a conversation is written anywhere unless the owner turns this on.
    record_transcripts: bool = False
    transcripts_dir: str = "{cache_dir}/transcripts"
    persona: str = "{package_dir}/persona.yaml"  # owner-editable; AVATAR_PERSONA_FILE is the usual override
    allow_persona_override: bool = False  # a session may not bring its own persona unless the owner allows it


class IceServer(BaseModel):
    """One STUN/TURN server as RTCPeerConnection takes it (the page and the runtime use the same list)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class TurnSettings(BaseModel):
    """A TURN relay (coturn with ``use-auth-secret``): credentials are minted per call and per session from
    the shared secret and expire after ``ttl_s`` (``realtime_avatar.rtc.turn``). No urls: no relay."""

    urls: list[str] = Field(default_factory=list)  # e.g. turn:relay.example.com:3478?transport=udp
    secret: str = Field(default="", repr=False)  # coturn's static-auth-secret (AVATAR_REALTIME__TURN__SECRET)
    ttl_s: float = Field(default=600.0, ge=60, le=86_400)  # long enough to set up a call, not to keep one

    @model_validator(mode="after")
    def _complete(self) -> TurnSettings:
        if self.urls and not self.secret:
            raise ValueError("realtime.turn.urls needs realtime.turn.secret (the relay's static-auth-secret)")
        for url in self.urls:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"realtime.turn.urls: {url!r} is not a turn: or turns: URL")
        return self


class RealtimeSettings(BaseModel):
    """Voice calls over WebRTC (``deployments/realtime.py``): caps, ICE, and when a turn ends."""

    max_calls: int = Field(default=2, ge=1)  # concurrent calls in the runtime; one more is a 503
    max_call_minutes: float = Field(default=15.0, gt=0)
    idle_timeout_s: float = Field(default=120.0, gt=0)  # nobody spoke for this long: the call ends
    # No microphone frame for this long (a browser sends one every 20 ms, even muted): the peer is gone.
    peer_timeout_s: float = Field(default=5.0, gt=0)
    ice_servers: list[IceServer] = Field(default_factory=list)  # none: host candidates (loopback, LAN)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    # "relay": this side offers only TURN-relayed candidates (what Cloud Run, with no inbound UDP, needs).
    ice_transport_policy: Literal["all", "relay"] = "all"
    # Listening (Silero VAD on 32 ms windows of 16 kHz audio). A window is speech at speech_threshold
    # and stays speech until it drops below silence_threshold (hysteresis, no flicker at the edges).
    speech_threshold: float = Field(default=0.5, gt=0, lt=1)
    silence_threshold: float = Field(default=0.35, gt=0, lt=1)
    min_speech_s: float = Field(default=0.15, ge=0)  # speech this long starts a turn (coughs do not)
    barge_in_s: float = Field(default=0.25, ge=0)  # while the avatar speaks, speech this long interrupts it
    end_of_turn_s: float = Field(default=0.5, gt=0)  # silence this long ends the turn (the hang-over)
    # Silence this long already starts the final ASR on what was said, so its text is ready when the
    # hang-over ends (thrown away if the user goes on).
    early_asr_s: float = Field(default=0.3, gt=0)
    # Live captions: a partial transcript this often. Each costs a whole whisper pass, which the final
    # one then waits behind on 2 cores: keep it rare there.
    partial_asr_s: float = Field(default=2.5, gt=0)
    pre_roll_s: float = Field(default=0.3, ge=0)  # audio kept from before the speech was detected
    max_utterance_s: float = Field(default=20.0, gt=1)
    idle_loop_s: float = Field(default=8.0, ge=2)  # the cached idle animation each call loops over
    settle_s: float = Field(default=0.3, ge=0)  # after each sentence the face eases back onto the loop
    # While nobody speaks, send every n-th frame of the loop (2: 12.5 fps): video encoding is most of what
    # a listening call costs. Speech always goes out at render.fps.
    idle_frame_stride: int = Field(default=2, ge=1, le=5)
    max_event_chars: int = Field(default=4096, ge=256)  # a longer data-channel message is ignored

    @model_validator(mode="after")
    def _ordered(self) -> RealtimeSettings:
        if self.silence_threshold > self.speech_threshold:
            raise ValueError("silence_threshold must not exceed speech_threshold")
        if self.early_asr_s > self.end_of_turn_s:
            raise ValueError("early_asr_s must not exceed end_of_turn_s")
        relays = [u for s in self.ice_servers for u in s.urls if u.startswith(("turn:", "turns:"))]
        if self.ice_transport_policy == "relay" and not (self.turn.urls or relays):
            raise ValueError("ice_transport_policy relay needs a TURN relay (realtime.turn.urls)")
        return self


class ClipCacheSettings(BaseModel):
    """Finished clips stored by the content hash of everything that made them (the persona's fixed lines)."""

    enabled: bool = True
    max_bytes: int = Field(default=200_000_000, ge=0)  # local disk cap; oldest clips go first
    ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)


class StoreSettings(BaseModel):
    """Where prepared voices and avatars are kept (see ``realtime_avatar.store.build_store``)."""

    # A GCS bucket name (bare, or "gs://name") shared by every node; None or "" keeps them on local disk.
    bucket: str | None = None
    prefix: str = "avatar-assets"  # objects are <prefix>/<kind>/<id> in the bucket
    memory_items: int = Field(default=32, ge=0)  # per kind, in each process's in-memory LRU
    # Stored voices and faces are deleted this long after they were stored (None: kept until DELETE).
    retention_s: float | None = Field(default=30 * 24 * 3600.0, gt=0)
    purge_interval_s: float = Field(default=3600.0, gt=0)  # how often each stage sweeps out expired ones
    # With a bucket, a local copy is trusted this long before the bucket is asked again whether it still
    # exists (a DELETE on another node reaches this one within it).
    recheck_s: float = Field(default=30.0, ge=0)

    @field_validator("bucket")
    @classmethod
    def _bare_bucket_name(cls, bucket: str | None) -> str | None:
        if bucket is None:
            return None
        bucket = bucket.strip().removeprefix("gs://").rstrip("/")
        if "/" in bucket:
            raise ValueError("store.bucket is a bucket name; put any path in store.prefix")
        return bucket or None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, dicts merged key by key, except that an engine spec naming
    another engine replaces the base spec whole (llama.cpp's options mean nothing to vLLM)."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and not _other_engine(current, value):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _other_engine(base: dict[str, Any], override: dict[str, Any]) -> bool:
    return "name" in base and "name" in override and base["name"] != override["name"]


def load_profile(profile: str, path: Path | None = None) -> dict[str, Any]:
    """The YAML defaults with ``profiles[profile]`` merged on top."""
    path = path or Path(os.environ.get("AVATAR_CONFIG", DEFAULT_CONFIG))
    document = yaml.safe_load(path.read_text()) or {}
    profiles = document.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r} in {path}; known: {', '.join(profiles)}")
    return deep_merge(document.get("defaults", {}), profiles[profile] or {})


class _ProfileSource(PydanticBaseSettingsSource):
    """The YAML layer: the profile named by the constructor, else AVATAR_PROFILE, else cpu."""

    def __init__(self, settings_cls: type[BaseSettings], profile: str | None) -> None:
        super().__init__(settings_cls)
        self.profile = profile

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        document = load_profile(self.profile or os.environ.get("AVATAR_PROFILE", "cpu"))
        # An environment override naming another engine (AVATAR_LLM__NAME=openai-compatible) takes the
        # spec whole, as a profile does: the YAML engine's options mean nothing to the other engine.
        for key, spec in document.items():
            other = os.environ.get(f"AVATAR_{key.upper()}__NAME")
            if isinstance(spec, dict) and "name" in spec and other and other != spec["name"]:
                document[key] = {k: v for k, v in spec.items() if k != "options"}
        return document


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AVATAR_", env_nested_delimiter="__", extra="ignore")

    profile: str = "cpu"
    cache_dir: Path = Path("~/.cache/realtime-avatar")
    render: RenderSettings = Field(default_factory=RenderSettings)
    limits: Limits = Field(default_factory=Limits)
    store: StoreSettings = Field(default_factory=StoreSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    clip_cache: ClipCacheSettings = Field(default_factory=ClipCacheSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    # `avatar cost`: prices and usage for a month's estimate (realtime_avatar/costs.py); None when a
    # config file has no `cost:` section.
    cost: CostSettings | None = None
    # The model stages, each one Serve deployment owning the engine of the same name below. The app
    # builder, /readyz, the weights check and the Serve options all read this list.
    stages: list[str] = Field(default_factory=lambda: ["asr", "llm", "tts", "avatar"])
    asr: EngineSpec
    llm: EngineSpec
    tts: EngineSpec
    motion: EngineSpec
    avatar: EngineSpec
    vad: EngineSpec  # runs inside the realtime deployment, on every call's microphone

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        profile = init_settings.init_kwargs.get("profile") if hasattr(init_settings, "init_kwargs") else None
        return init_settings, env_settings, _ProfileSource(settings_cls, profile)

    @property
    def cache_path(self) -> Path:
        return self.cache_dir.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.cache_path / "models"

    def engine(self, stage: str) -> EngineSpec:
        """The engine spec of a stage (or of ``motion``, which runs inside the avatar stage)."""
        spec = getattr(self, stage, None)
        if not isinstance(spec, EngineSpec):
            raise ValueError(f"no engine spec {stage!r} in the settings")
        return spec

    @property
    def engine_specs(self) -> dict[str, EngineSpec]:
        return {name: value for name, value in self if isinstance(value, EngineSpec)}

    @model_validator(mode="after")
    def _expand_and_check(self) -> Settings:
        # Paths in profiles say "{models_dir}/..." or "{cache_dir}/..." so they follow cache_dir.
        places = {"{models_dir}": str(self.models_dir), "{cache_dir}": str(self.cache_path),
                  "{package_dir}": str(DEFAULT_CONFIG.parent)}
        for spec in self.engine_specs.values():
            spec.options = {k: _expand(v, places) for k, v in spec.options.items()}
        self.chat.persona = _expand(self.chat.persona, places)
        self.chat.transcripts_dir = _expand(self.chat.transcripts_dir, places)
        for stage in self.stages:
            self.engine(stage)
        missing = [d for d in (*self.stages, *SERVICE_DEPLOYMENTS) if d not in self.serve.deployments]
        if missing:
            raise ValueError(f"serve.deployments has no entry for {', '.join(missing)}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
