"""The avatar app: Ingress -> {ASR, TTS, Avatar}, with Avatar pulling audio from TTS chunk by chunk.

``serve_config.yaml`` names ``graphs.avatar_app:build_app`` with ``args: {profile: ...}``; every
deployment's replicas, CPUs, GPU share and queue limits come from that profile in ``avatar.yaml``
(environment overrides included), so the same builder serves a laptop, CI and one L4.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from deployments.asr import ASRDeployment
from deployments.avatar import AvatarDeployment
from deployments.ingress import Ingress
from deployments.tts import TTSDeployment
from realtime_avatar.config import Settings
from realtime_avatar.models import profile_settings

STAGES = ("asr", "tts", "avatar")


def deployment_options(settings: Settings, stage: str) -> dict[str, Any]:
    """Serve options for one deployment from the profile: CPUs and queues from ``serve``, the GPU
    fraction from the engine's ``gpu_share`` (absent on the CPU profile)."""
    serve = settings.serve
    limits = getattr(serve, stage)
    actor: dict[str, Any] = {"num_cpus": limits.num_cpus}
    if stage in STAGES:
        gpu_share = getattr(settings, stage).gpu_share
        if gpu_share:
            actor["num_gpus"] = gpu_share
    return {
        "num_replicas": limits.num_replicas,
        "ray_actor_options": actor,
        "max_ongoing_requests": limits.max_ongoing_requests,
        "max_queued_requests": limits.max_queued_requests,
        "health_check_period_s": serve.health_check_period_s,
        "health_check_timeout_s": serve.health_check_timeout_s,
    }


def build_app(args: dict[str, Any] | None = None) -> Application:
    """``args``: ``profile`` (default AVATAR_PROFILE, else cpu) and optional ``log_level``."""
    args = dict(args or {})
    settings = profile_settings(str(args.get("profile") or os.environ.get("AVATAR_PROFILE", "cpu")))
    config = {**settings.model_dump(mode="json"), "log_level": str(args.get("log_level", "INFO"))}
    asr = ASRDeployment.options(**deployment_options(settings, "asr")).bind(config)
    tts = TTSDeployment.options(**deployment_options(settings, "tts")).bind(config)
    avatar = AvatarDeployment.options(**deployment_options(settings, "avatar")).bind(config, tts)
    return Ingress.options(**deployment_options(settings, "ingress")).bind(config, asr, tts, avatar)
