"""The l4 profile's LLM stage: vLLM served by ``ray.serve.llm`` (its ``LLMServer`` deployment), behind
``VLLMChat``, an adapter with the CPU LLM deployment's three methods (``stream_chat``, ``ready``,
``count_tokens``), so the conversation deployment never knows which one it talks to.

What Ray 2.60 does here (read in ``ray/llm/_internal/serve``):

- ``ray.serve.llm`` cannot even be imported without vLLM (its protocol models import vLLM's, or
  SGLang's) and pyarrow; ``build_llm_deployment`` resolves the vLLM engine config, which imports vLLM,
  in whichever process builds the app. So the LLM stage is built only where the ``gpu`` extra is
  installed; on CPU machines only the config (``vllm_llm_config_dict``) is checked, against Ray's schema.
- The GPU share is a placement group: ``placement_group_config={"bundles": [{"GPU": share}]}``;
  Ray folds the replica's own CPUs into bundle 0 and adds ``accelerator_type:L4: 0.001``.
- vLLM's Ray executor asks for ``VLLM_RAY_PER_WORKER_GPUS`` GPUs per worker (default 1: it would never
  fit in a 0.55 bundle). Ray derives that value from the bundle but only for its helper tasks, not
  the replica whose child process runs the engine (ray-project/ray#63875, open): so it is set here.
- ``LLMServer.chat`` on a streaming handle yields lists (50 ms batches) of OpenAI SSE strings,
  ``"data: {chunk json}\\n\\n"``, ending with ``"data: [DONE]\\n\\n"``; a request vLLM refuses comes as
  an ``ErrorResponse`` object (``.error.message`` / ``.code``) instead.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from engines.errors import InputError
from engines.llm.base import ContextTooLongError, LLMUnavailableError
from realtime_avatar import logs

ACCELERATOR_TYPE = "L4"
LLM_SERVER_NAME = "LLMServer"  # the vLLM deployment's name (Ray's default would add the model id)
DEFAULT_MODEL_ID = "qwen2.5-7b-instruct"
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NUM_SEQS = 16
# ``llm.options`` this stage understands; anything else is refused (a typo would otherwise be ignored).
OPTIONS = (
    "model", "model_id", "max_model_len", "quantization", "dtype", "gpu_memory_utilization",
    "enforce_eager", "max_num_seqs", "engine_kwargs", "env_vars", "stream_batching_interval_ms",
    "tokenizer_file",
)
SAMPLING_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")  # engines.llm.base's params
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def vllm_llm_config_dict(
    spec_options: Mapping[str, Any], gpu_share: float | None, serving: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``LLMConfig`` fields for the engine spec's options (paths already expanded by the config).

    ``serving``: the LLM stage's Serve limits (``num_replicas``, ``num_cpus``, ``max_ongoing_requests``,
    ``health_check_period_s``, ``health_check_timeout_s``), applied to the LLMServer replica, which
    holds the GPU slice and runs vLLM's scheduler and tokenizer on its CPUs.
    """
    unknown = sorted(set(spec_options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown llm.options for vllm: {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    if gpu_share is None or not 0 < gpu_share <= 1:
        raise ValueError(f"the vllm LLM stage needs llm.gpu_share in (0, 1], got {gpu_share!r}")
    model = spec_options.get("model")
    if not model:
        raise ValueError("llm.options.model must name the model: a local directory or a gs:// mirror")
    utilization = float(spec_options.get("gpu_memory_utilization", gpu_share))
    if not 0 < utilization <= gpu_share:
        # vLLM takes this fraction of the whole GPU at start: more than the share eats memory that the
        # TTS, avatar and ASR stages were promised, and the first of them to grow runs out.
        raise ValueError(
            f"llm.options.gpu_memory_utilization ({utilization:g}) must be > 0 and <= llm.gpu_share "
            f"({gpu_share:g}), the LLM's part of the GPU"
        )
    max_model_len = int(spec_options.get("max_model_len", DEFAULT_MAX_MODEL_LEN))
    max_num_seqs = int(spec_options.get("max_num_seqs", DEFAULT_MAX_NUM_SEQS))
    if max_model_len < 1 or max_num_seqs < 1:
        raise ValueError("llm.options.max_model_len and max_num_seqs must be positive")
    engine_kwargs: dict[str, Any] = {
        "max_model_len": max_model_len,  # capped: the KV cache must fit in what is left of the share
        "gpu_memory_utilization": utilization,
        "quantization": spec_options.get("quantization", "awq_marlin"),  # None: vLLM reads the checkpoint
        "dtype": spec_options.get("dtype", "float16"),  # AWQ kernels compute in fp16
        "enforce_eager": bool(spec_options.get("enforce_eager", False)),  # True saves CUDA-graph memory
        "max_num_seqs": max_num_seqs,
        **dict(spec_options.get("engine_kwargs") or {}),
    }
    engine_kwargs = {k: v for k, v in engine_kwargs.items() if v is not None}

    env_vars = {"VLLM_RAY_PER_WORKER_GPUS": str(gpu_share)}
    if not str(model).startswith(("gs://", "s3://", "abfss://", "azure://")):
        env_vars["HF_HUB_OFFLINE"] = "1"  # local weights: never fall back to the hub at run time
    env_vars.update({str(k): str(v) for k, v in (spec_options.get("env_vars") or {}).items()})
    if float(env_vars["VLLM_RAY_PER_WORKER_GPUS"]) != gpu_share:
        raise ValueError("llm.options.env_vars.VLLM_RAY_PER_WORKER_GPUS must equal llm.gpu_share")

    serving = serving or {}
    deployment_config: dict[str, Any] = {
        "num_replicas": int(serving.get("num_replicas", 1)),
        "max_ongoing_requests": int(serving.get("max_ongoing_requests", max_num_seqs)),
        # Admission (503 + Retry-After) is the adapter's; the engine takes what the adapter let through.
        "max_queued_requests": -1,
        "ray_actor_options": {"num_cpus": float(serving.get("num_cpus", 1))},
    }
    for key in ("health_check_period_s", "health_check_timeout_s"):
        if serving.get(key) is not None:
            deployment_config[key] = serving[key]

    config: dict[str, Any] = {
        "model_loading_config": {"model_id": str(spec_options.get("model_id", DEFAULT_MODEL_ID)),
                                 "model_source": str(model)},
        "accelerator_type": ACCELERATOR_TYPE,
        "placement_group_config": {"bundles": [{"GPU": gpu_share}], "strategy": "PACK"},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment_config,
        "runtime_env": {"env_vars": env_vars},
    }
    if spec_options.get("stream_batching_interval_ms") is not None:
        # LLMServer batches stream chunks for 50 ms by default; 0 sends each token at once.
        config["experimental_configs"] = {
            "stream_batching_interval_ms": float(spec_options["stream_batching_interval_ms"])
        }
    return config


def _serve_llm() -> Any:
    try:
        import ray.serve.llm as serve_llm
    except ImportError as exc:  # no vLLM (or no pyarrow): a CPU machine
        raise LLMUnavailableError(
            "the l4 LLM stage serves vLLM through ray.serve.llm, which needs vllm and pyarrow: "
            f"install the gpu extra (pip install 'realtime-avatar[gpu]') on a CUDA machine ({exc})"
        ) from exc
    return serve_llm


def vllm_llm_config(
    spec_options: Mapping[str, Any], gpu_share: float | None, serving: Mapping[str, Any] | None = None
) -> Any:
    """The ``ray.serve.llm.LLMConfig`` (importable only where vLLM is installed)."""
    return _serve_llm().LLMConfig(**vllm_llm_config_dict(spec_options, gpu_share, serving))


def build_vllm_stage(
    spec_options: Mapping[str, Any], gpu_share: float | None, serving: Mapping[str, Any] | None = None
) -> Application:
    """The LLMServer deployment, bound: pass it to ``VLLMChat.bind`` to get a handle to it there."""
    serve_llm = _serve_llm()
    config = serve_llm.LLMConfig(**vllm_llm_config_dict(spec_options, gpu_share, serving))
    return serve_llm.build_llm_deployment(config, override_serve_options={"name": LLM_SERVER_NAME})


def bind_vllm_chat(
    spec_options: Mapping[str, Any], gpu_share: float | None, serving: Mapping[str, Any] | None = None,
    *, adapter_options: Mapping[str, Any] | None = None, log_level: str = "INFO",
) -> Application:
    """The whole l4 LLM stage: the LLMServer deployment and the ``VLLMChat`` adapter in front of it."""
    llm_server = build_vllm_stage(spec_options, gpu_share, serving)
    return VLLMChat.options(**dict(adapter_options or {})).bind(
        llm_server,
        model_id=str(spec_options.get("model_id", DEFAULT_MODEL_ID)),
        context_tokens=int(spec_options.get("max_model_len", DEFAULT_MAX_MODEL_LEN)),
        tokenizer_file=spec_options.get("tokenizer_file") or _local_tokenizer(str(spec_options["model"])),
        log_level=log_level,
    )


def _local_tokenizer(model: str) -> str | None:
    return None if "://" in model else str(Path(model) / "tokenizer.json")


def chat_request_fields(
    model_id: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any], request_id: str
) -> dict[str, Any]:
    """The chat-completions request for ``messages``; ``params`` beyond ``SAMPLING_PARAMS`` are ignored."""
    fields: dict[str, Any] = {
        "model": model_id,
        "messages": [{"role": m["role"], "content": str(m["content"])} for m in messages],
        "stream": True,
        # Request ids must be unique among running requests: the suffix keeps retries apart in vLLM.
        "request_id": f"{request_id}-{uuid.uuid4().hex[:8]}",
    }
    for key in SAMPLING_PARAMS:
        if params.get(key) is not None:
            fields["max_completion_tokens" if key == "max_tokens" else key] = params[key]
    return fields


def chat_request(
    model_id: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any], request_id: str
) -> Any:
    """vLLM's request model, which LLMServer hands to vLLM's OpenAI layer as it is."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest  # needs vLLM: the GPU image

    return ChatCompletionRequest(**chat_request_fields(model_id, messages, params, request_id))


def _error(error: Mapping[str, Any]) -> Exception:
    message = str(error.get("message") or error)
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 500:
        if re.search(r"context length|max_model_len|too long", message, re.IGNORECASE):
            return ContextTooLongError(message)
        return InputError(message)
    return LLMUnavailableError(f"vLLM: {message}")


class ChunkReader:
    """LLMServer's chat stream items -> text deltas; remembers the finish reason and the end marker."""

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, item: Any) -> Iterator[str]:
        for piece in item if isinstance(item, list) else [item]:
            if isinstance(piece, str):
                yield from self._sse(piece)
            elif isinstance(piece, Mapping):
                yield from self._chunk(piece)
            elif hasattr(piece, "model_dump"):  # ErrorResponse, or a whole ChatCompletionResponse
                yield from self._chunk(piece.model_dump())
            else:
                raise LLMUnavailableError(f"vLLM sent an unexpected stream item: {type(piece).__name__}")

    def _sse(self, text: str) -> Iterator[str]:
        for line in text.splitlines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            if payload == "[DONE]":
                self.done = True
            elif payload:
                yield from self._chunk(json.loads(payload))

    def _chunk(self, chunk: Mapping[str, Any]) -> Iterator[str]:
        if chunk.get("error") or chunk.get("object") == "error":  # vLLM's in-stream error forms
            raise _error(chunk.get("error") or chunk)
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or choice.get("message") or {}).get("content")
            if content:
                yield content
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]


def estimate_tokens(text: str) -> int:
    """Qwen2.5 averages ~4 characters a token in English, ~3.5 in Spanish and ~1.4 Han characters in
    Chinese; this counts 3 and 1, so it over-counts a little: the prompt budget then drops history a
    turn early rather than overflowing the context."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 3)


def _load_tokenizer(path: str | None) -> Any:
    if not path or not Path(path).is_file():
        return None
    from tokenizers import Tokenizer  # in the image with transformers; faster-whisper brings it on CPU

    return Tokenizer.from_file(path)


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.1})
class VLLMChat:
    """The l4 ``LLM`` deployment: no model here, only the chat-completions stream turned into deltas."""

    def __init__(
        self, llm: DeploymentHandle, model_id: str = DEFAULT_MODEL_ID,
        context_tokens: int = DEFAULT_MAX_MODEL_LEN, tokenizer_file: str | None = None,
        log_level: str = "INFO",
    ) -> None:
        logs.configure(log_level)
        self._server = llm
        self._stream = llm.options(stream=True)  # LLMServer.chat answers with a stream
        self.model_id, self.context_tokens = model_id, context_tokens
        # The model's own tokenizer.json gives exact counts where this replica sees the weights
        # (one Cloud Run node); elsewhere ``estimate_tokens``.
        self._tokenizer = _load_tokenizer(tokenizer_file)
        self.in_flight = 0

    async def ready(self) -> dict[str, Any]:
        await self._server.check_health.remote()  # raises while the engine is dead; waits while it loads
        return {"engine": "vllm", "model": self.model_id, "context_tokens": self.context_tokens,
                "in_flight": self.in_flight}

    async def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return estimate_tokens(text)

    async def stream_chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], request_id: str = "-"
    ) -> AsyncIterator[str | dict[str, Any]]:
        """Text deltas, then one ``{"finish_reason": ...}`` ("stop", "length", or None if unknown).

        When the caller goes away (its stream cancelled or closed), this generator gets CancelledError
        or GeneratorExit, and ``finally`` cancels the LLMServer call, which aborts the request in vLLM.
        """
        logs.request_id.set(request_id)
        response = self._stream.chat.remote(chat_request(self.model_id, messages, params, request_id))
        reader = ChunkReader()
        self.in_flight += 1
        try:
            try:
                async for item in response:
                    for delta in reader.feed(item):
                        yield delta
            except (InputError, LLMUnavailableError):
                raise
            except Exception as exc:  # the LLMServer replica died or refused: the model is unavailable
                raise LLMUnavailableError(f"the vLLM stream failed: {exc}") from exc
            yield {"finish_reason": reader.finish_reason}
        finally:
            self.in_flight -= 1
            if not reader.done:
                response.cancel()
