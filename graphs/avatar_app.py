"""The avatar app: Ingress -> Conversation -> {LLM, TTS, Avatar}, plus ASR; Avatar pulls audio from TTS;
Realtime (the WebRTC calls) -> {ASR, Conversation, Avatar}.

``serve_config.yaml`` names ``graphs.avatar_app:build_app`` with ``args: {profile: ...}``. The model
stages and their order come from ``Settings.stages``; each stage's deployment names the stages it
needs (``needs``), and its replicas, CPUs, GPU share and queue limits come from the profile in
``avatar.yaml`` (environment overrides included), so the same builder serves a laptop, CI and one L4.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from deployments.asr import ASRDeployment
from deployments.avatar import AvatarDeployment
from deployments.conversation import ConversationDeployment
from deployments.ingress import Ingress
from deployments.llm import LLMDeployment
from deployments.realtime import RealtimeDeployment
from deployments.tts import TTSDeployment
from realtime_avatar.config import Settings

# The deployment class of each model stage a profile may list in ``stages`` (a new stage: one entry).
STAGE_DEPLOYMENTS: dict[str, Any] = {
    "asr": ASRDeployment, "llm": LLMDeployment, "tts": TTSDeployment, "avatar": AvatarDeployment,
}


def deployment_options(settings: Settings, name: str) -> dict[str, Any]:
    """Serve options for one deployment from the profile: CPUs and queues from ``serve.deployments``,
    the GPU fraction from the stage engine's ``gpu_share`` (absent on the CPU profile)."""
    serve = settings.serve
    limits = serve.deployments[name]
    actor: dict[str, Any] = {"num_cpus": limits.num_cpus}
    if name in settings.stages and settings.engine(name).gpu_share:
        actor["num_gpus"] = settings.engine(name).gpu_share
    return {
        "num_replicas": limits.num_replicas,
        "ray_actor_options": actor,
        "max_ongoing_requests": limits.max_ongoing_requests,
        "max_queued_requests": limits.max_queued_requests,
        "health_check_period_s": serve.health_check_period_s,
        "health_check_timeout_s": serve.health_check_timeout_s,
        # A replica being stopped (SIGTERM, scale-in) finishes its calls for at most this long.
        "graceful_shutdown_timeout_s": serve.drain_timeout_s,
    }


def _bind_stage(settings: Settings, stage: str, config: dict[str, Any], bound: dict[str, Any]) -> Any:
    if stage == "llm" and settings.llm.name == "vllm":
        return _bind_vllm(settings, config)
    if stage not in STAGE_DEPLOYMENTS:
        raise ValueError(f"stage {stage!r} has no deployment; known: {', '.join(STAGE_DEPLOYMENTS)}")
    deployment = STAGE_DEPLOYMENTS[stage]
    missing = [n for n in _needs(deployment) if n not in bound]
    if missing:
        raise ValueError(f"stage {stage!r} needs {', '.join(missing)} listed before it in stages")
    handles = [bound[n] for n in _needs(deployment)]
    return deployment.options(**deployment_options(settings, stage)).bind(config, *handles)


def _bind_vllm(settings: Settings, config: dict[str, Any]) -> Any:
    """The l4 LLM stage: vLLM's LLMServer (ray.serve.llm) with its GPU share in its placement group, and
    the thin ``VLLMChat`` adapter in front (admission limits only, no GPU of its own)."""
    from graphs.vllm_stage import bind_vllm_chat  # only the l4 profile needs ray.serve.llm

    serve, limits = settings.serve, settings.serve.deployments["llm"]
    server = {**limits.model_dump(), "health_check_period_s": serve.health_check_period_s,
              "health_check_timeout_s": serve.health_check_timeout_s}
    return bind_vllm_chat(
        settings.llm.options, settings.llm.gpu_share, server,
        adapter_options={"max_ongoing_requests": limits.max_ongoing_requests,
                         "max_queued_requests": limits.max_queued_requests},
        log_level=config["log_level"],
    )


def _needs(deployment: Any) -> tuple[str, ...]:
    """The stages a deployment's constructor takes handles to (its class's ``needs``)."""
    return tuple(getattr(deployment.func_or_class, "needs", ()))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """``args``: ``profile`` (default AVATAR_PROFILE, else cpu) and optional ``log_level``."""
    args = dict(args or {})
    settings = Settings(profile=str(args.get("profile") or os.environ.get("AVATAR_PROFILE", "cpu")))
    config = {**settings.model_dump(mode="json"), "log_level": str(args.get("log_level", "INFO"))}
    bound: dict[str, Any] = {}
    for stage in settings.stages:
        bound[stage] = _bind_stage(settings, stage, config, bound)
    conversation = ConversationDeployment.options(**deployment_options(settings, "conversation"))
    bound["conversation"] = conversation.bind(config, *(bound[n] for n in _needs(ConversationDeployment)))
    realtime = RealtimeDeployment.options(**deployment_options(settings, "realtime"))
    bound["realtime"] = realtime.bind(config, *(bound[n] for n in _needs(RealtimeDeployment)),
                                      bound["conversation"])
    return Ingress.options(**deployment_options(settings, "ingress")).bind(config, bound)
