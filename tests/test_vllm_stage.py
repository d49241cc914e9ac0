"""The l4 LLM stage (graphs/vllm_stage.py): vLLM through ray.serve.llm, and the adapter in front of it.

No vLLM here (CUDA only), and Ray 2.60 cannot build the LLMServer deployment without it: its builder
imports vLLM to sort the engine arguments. So on CPU the resolved l4 config is validated against
ray.serve.llm's own pydantic schema (``LLMConfig``, of which the public class is a bare subclass, and
the placement-group schema; these need pyarrow) and against Serve's deployment schema; the build
itself is checked where vLLM is installed (the GPU image). The adapter is tested on a stand-in for
the LLMServer handle that streams what LLMServer streams: lists of OpenAI SSE strings.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.serve.schema import DeploymentSchema

from engines.errors import InputError
from engines.llm.base import ContextTooLongError, LLMUnavailableError
from graphs import vllm_stage
from graphs.vllm_stage import ChunkReader, VLLMChat, estimate_tokens, vllm_llm_config_dict
from realtime_avatar.config import Settings

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture
def l4(monkeypatch) -> Settings:
    monkeypatch.setenv("AVATAR_PROFILE", "l4")
    return Settings()


def _l4_config(settings: Settings) -> dict[str, Any]:
    serving = {**settings.serve.deployments["llm"].model_dump(),
               "health_check_period_s": settings.serve.health_check_period_s,
               "health_check_timeout_s": settings.serve.health_check_timeout_s}
    return vllm_llm_config_dict(settings.llm.options, settings.llm.gpu_share, serving)


def test_l4_llm_config_takes_the_llms_gpu_share_and_caps_the_context(l4):
    assert l4.llm.name == "vllm"
    config = _l4_config(l4)
    share = l4.llm.gpu_share
    assert share == pytest.approx(0.55)
    assert config["accelerator_type"] == "L4"
    assert config["placement_group_config"]["bundles"] == [{"GPU": share}]
    engine = config["engine_kwargs"]
    assert engine["gpu_memory_utilization"] == share
    assert engine["max_model_len"] == 4096
    assert engine["quantization"] == "awq_marlin" and engine["dtype"] == "float16"
    # vLLM sizes its Ray worker by this variable; Ray 2.60 does not pass it to the replica itself.
    assert config["runtime_env"]["env_vars"]["VLLM_RAY_PER_WORKER_GPUS"] == str(share)
    loading = config["model_loading_config"]
    assert loading["model_id"] == "qwen2.5-7b-instruct"
    assert "{models_dir}" not in loading["model_source"]
    assert loading["model_source"].endswith("qwen2.5-7b-instruct-awq")
    # Every stage's share together fits the one L4.
    assert sum(l4.engine(stage).gpu_share or 0 for stage in l4.stages) <= 1 + 1e-9


def test_l4_llm_config_passes_ray_serve_llm_and_serve_schemas(l4):
    pytest.importorskip("pyarrow", reason="ray.serve.llm's config schema imports pyarrow")
    from ray.llm._internal.common.placement import PlacementGroupConfig
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    config = _l4_config(l4)
    llm_config = LLMConfig(**config)
    assert llm_config.accelerator_type == "L4"
    assert llm_config.accelerator_config.kind == "gpu"  # inferred from the GPU bundle
    assert llm_config.max_request_context_length == 4096
    PlacementGroupConfig(**config["placement_group_config"])
    # Ray's DeploymentConfig check accepts unknown keys, so check the names against Serve's schema.
    deployment = config["deployment_config"]
    assert set(deployment) <= set(DeploymentSchema.model_fields)
    DeploymentSchema(name=vllm_stage.LLM_SERVER_NAME, **deployment,
                     placement_group_bundles=config["placement_group_config"]["bundles"])


@pytest.mark.parametrize("utilization", [0.7, 0.0])
def test_gpu_memory_utilization_beyond_the_share_is_refused(utilization):
    options = {"model": "/models/qwen2.5-7b-instruct-awq", "gpu_memory_utilization": utilization}
    with pytest.raises(ValueError, match=r"gpu_memory_utilization \(.+\) must be > 0 and <= llm\.gpu_share"):
        vllm_llm_config_dict(options, 0.55)


def test_bad_specs_are_refused_with_what_to_fix():
    with pytest.raises(ValueError, match=r"llm\.gpu_share"):
        vllm_llm_config_dict({"model": "/m"}, None)
    with pytest.raises(ValueError, match=r"unknown llm\.options for vllm: max_len"):
        vllm_llm_config_dict({"model": "/m", "max_len": 4096}, 0.55)
    with pytest.raises(ValueError, match=r"must equal llm\.gpu_share"):
        vllm_llm_config_dict({"model": "/m", "env_vars": {"VLLM_RAY_PER_WORKER_GPUS": "1"}}, 0.55)
    lower = vllm_llm_config_dict({"model": "gs://bucket/qwen", "gpu_memory_utilization": 0.5}, 0.55)
    assert lower["engine_kwargs"]["gpu_memory_utilization"] == 0.5
    assert "HF_HUB_OFFLINE" not in lower["runtime_env"]["env_vars"]  # a bucket mirror, not local weights


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: the build test below runs instead")
def test_without_vllm_the_build_says_which_extra_to_install(l4):
    with pytest.raises(LLMUnavailableError, match=r"realtime-avatar\[gpu\]"):
        vllm_stage.build_vllm_stage(l4.llm.options, l4.llm.gpu_share)


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the gpu extra), which Ray's LLMServer builder imports")
def test_with_vllm_the_stage_builds_the_way_serves_controller_builds_it(l4):
    from ray.serve._private.build_app import build_app as serve_build

    serving = l4.serve.deployments["llm"]
    app = vllm_stage.bind_vllm_chat(l4.llm.options, l4.llm.gpu_share, serving.model_dump())
    built = {d.name: d for d in serve_build(app, name="llm").deployments}
    server = built[vllm_stage.LLM_SERVER_NAME]
    (bundle,) = server.placement_group_bundles
    assert bundle["GPU"] == pytest.approx(0.55) and bundle["CPU"] == serving.num_cpus
    assert bundle["accelerator_type:L4"] > 0
    env = server.ray_actor_options["runtime_env"]["env_vars"]
    assert env["VLLM_RAY_PER_WORKER_GPUS"] == "0.55"
    assert not built["LLM"].ray_actor_options.get("num_gpus")


# --- the adapter, on a stand-in for the LLMServer handle -------------------------------------------

def _sse(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    """One chat.completion.chunk as vLLM's OpenAI layer writes it."""
    return _sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764633600,
                 "model": "qwen2.5-7b-instruct",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})


DONE = "data: [DONE]\n\n"
# LLMServer.chat on a streaming handle: the chunks batched into lists (every 50 ms by default).
REPLY = [
    [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hola"})],
    [_chunk({"content": ", ¿qué"}), _chunk({"content": " tal?"})],
    [_chunk({"content": ""}, finish="stop"), DONE],
]
WAIT = object()  # the stand-in stream blocks here, like an engine still computing the next token


class StreamStandIn:
    """What ``handle.options(stream=True).chat.remote(...)`` returns: an async iterator with cancel()."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.cancelled, self.inner_closed = items, False, False
        self._inner = self._run()
        self._closing: asyncio.Task[None] | None = None

    async def _run(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                if item is WAIT:
                    await asyncio.Event().wait()
                yield item
        finally:
            self.inner_closed = True  # the LLMServer generator ended: vLLM aborts the request there

    def __aiter__(self) -> StreamStandIn:
        return self

    async def __anext__(self) -> Any:
        return await self._inner.__anext__()

    def cancel(self) -> None:
        # Serve cancels the call in the LLMServer replica, which closes its stream.
        self.cancelled = True
        self._closing = asyncio.get_running_loop().create_task(self._inner.aclose())


class HandleStandIn:
    """Only a test double for the LLMServer ``DeploymentHandle``: options(), chat.remote(), check_health."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.requests, self.streams = items, [], []
        self.chat = self.check_health = self

    def options(self, **_: Any) -> HandleStandIn:
        return self

    def remote(self, request: Any = None) -> Any:
        if request is None:  # check_health
            async def healthy() -> None:
                return None
            return healthy()
        self.requests.append(request)
        self.streams.append(StreamStandIn(self.items))
        return self.streams[-1]


@pytest.fixture
def adapter(monkeypatch):
    # vLLM's request model is not importable here: the adapter sends its fields instead.
    monkeypatch.setattr(vllm_stage, "chat_request", vllm_stage.chat_request_fields)

    def make(items: list[Any], **kwargs: Any) -> tuple[Any, HandleStandIn]:
        handle = HandleStandIn(items)
        return VLLMChat.func_or_class(handle, **kwargs), handle

    return make


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hola"}]


def test_stream_chat_yields_the_deltas_then_the_finish_reason(adapter):
    chat, handle = adapter(REPLY)
    params = {"max_tokens": 96, "temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1}
    out = asyncio.run(_collect(chat.stream_chat(MESSAGES, params, request_id="r1")))
    assert out == ["Hola", ", ¿qué", " tal?", {"finish_reason": "stop"}]
    (request,) = handle.requests
    assert request["model"] == "qwen2.5-7b-instruct" and request["stream"] is True
    assert request["messages"] == MESSAGES and request["request_id"].startswith("r1-")
    assert (request["max_completion_tokens"], request["temperature"], request["top_p"]) == (96, 0.7, 0.9)
    assert "repeat_penalty" not in request  # not a chat-completions parameter
    assert not handle.streams[0].cancelled  # it ended by itself: nothing to cancel
    assert chat.in_flight == 0


def test_closing_mid_stream_cancels_the_llmserver_call(adapter):
    chat, handle = adapter([*REPLY[:2], WAIT, REPLY[2]])

    async def first_then_close() -> list[Any]:
        stream = chat.stream_chat(MESSAGES, {}, request_id="r2")
        got = [await anext(stream)]
        await stream.aclose()  # the caller went away (GeneratorExit at the yield)
        await asyncio.sleep(0)
        return got

    assert asyncio.run(first_then_close()) == ["Hola"]
    inner = handle.streams[0]
    assert inner.cancelled and inner.inner_closed and chat.in_flight == 0


def test_a_cancelled_caller_cancels_the_llmserver_call(adapter):
    chat, handle = adapter([REPLY[0], WAIT, REPLY[1]])

    async def cancel_while_waiting() -> list[Any]:
        got: list[Any] = []

        async def consume() -> None:
            async for item in chat.stream_chat(MESSAGES, {}, request_id="r3"):
                got.append(item)

        task = asyncio.create_task(consume())
        while not got:
            await asyncio.sleep(0.01)
        task.cancel()  # CancelledError while the adapter awaits the next token
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return got

    assert asyncio.run(cancel_while_waiting()) == ["Hola"]
    inner = handle.streams[0]
    assert inner.cancelled and inner.inner_closed and chat.in_flight == 0


class ErrorInfo:
    """Shaped like ray.serve.llm's ErrorResponse (a pydantic model: ``.model_dump()``)."""

    def __init__(self, message: str, code: int) -> None:
        self.payload = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": code}}

    def model_dump(self) -> dict[str, Any]:
        return self.payload


@pytest.mark.parametrize(("item", "error"), [
    ([ErrorInfo("This model's maximum context length is 4096 tokens.", 400)], ContextTooLongError),
    ([ErrorInfo("temperature must be non-negative", 400)], InputError),
    ([ErrorInfo("engine dead", 500)], LLMUnavailableError),
    ([_sse({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}})],
     LLMUnavailableError),
])
def test_refusals_and_failures_become_the_llm_errors_the_conversation_maps(adapter, item, error):
    chat, handle = adapter([item])
    with pytest.raises(error):
        asyncio.run(_collect(chat.stream_chat(MESSAGES, {})))
    assert handle.streams[0].cancelled  # no [DONE]: the call is cancelled on the way out


def test_chunk_reader_reads_a_length_cut_and_a_whole_response():
    reader = ChunkReader()
    deltas = [d for item in [[_chunk({"content": "a"})], _chunk({"content": "b"}, finish="length")]
              for d in reader.feed(item)]
    assert deltas == ["a", "b"] and reader.finish_reason == "length" and not reader.done
    whole = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                          "finish_reason": "stop"}]}
    assert list(ChunkReader().feed(whole)) == ["hi"]


def test_ready_and_token_counts(adapter, tmp_path):
    chat, _ = adapter(REPLY, context_tokens=4096)
    ready = asyncio.run(chat.ready())
    assert ready == {"engine": "vllm", "model": "qwen2.5-7b-instruct", "context_tokens": 4096, "in_flight": 0}
    # No tokenizer.json in reach: the estimate, which over-counts rather than under-counts.
    text = "Hello there, how are you?"
    assert asyncio.run(chat.count_tokens(text)) == estimate_tokens(text) == 9
    assert estimate_tokens("你好世界") == 4 and estimate_tokens("") == 0
    # With the model's tokenizer.json beside the weights: exact counts.
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    exact, _ = adapter(REPLY, tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert asyncio.run(exact.count_tokens("hello world hello")) == 3
