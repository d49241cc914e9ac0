"""serve_config.yaml: both profiles resolve to valid Serve configs and build the whole graph (no Ray
cluster, no GPU: the app is built the way Serve's controller builds it, then inspected)."""

import os

import pytest
import yaml
from ray import serve
from ray.serve._private.build_app import build_app as serve_build
from ray.serve.schema import ServeDeploySchema

from graphs import vllm_stage
from graphs.launch import build_application, resolve
from realtime_avatar.config import DEFAULT_CONFIG, Settings

DEPLOYMENTS = {"Ingress", "Conversation", "Realtime", "ASR", "LLM", "TTS", "Avatar"}


def _deployments(profile: str) -> dict:
    config = resolve(profile)
    (app,) = config["applications"]
    built = serve_build(build_application(app), name=app["name"])
    assert built.ingress_deployment_name == "Ingress"
    return {d.name: d for d in built.deployments}


def test_cpu_profile_fits_a_two_core_machine_without_gpus():
    config = resolve("cpu")
    ServeDeploySchema.model_validate(config)
    assert config["http_options"]["host"] == "127.0.0.1"
    deployments = _deployments("cpu")
    assert set(deployments) == DEPLOYMENTS
    options = {name: d.ray_actor_options for name, d in deployments.items()}
    assert all(not o.get("num_gpus") for o in options.values())
    assert 0 < sum(o["num_cpus"] * deployments[n].num_replicas for n, o in options.items()) <= 2


def test_l4_profile_shares_one_gpu_and_listens_on_cloud_runs_port(monkeypatch):
    """The whole l4 graph builds as Serve's controller builds it, except vLLM's own LLMServer: Ray 2.60
    cannot build that without vLLM importable (CUDA only), so it is replaced by a placeholder here and
    its resolved config is checked against ray.serve.llm's schema in tests/test_vllm_stage.py. The GPU
    it takes is its placement group's bundle, counted with the other stages' num_gpus."""
    monkeypatch.setenv("PORT", "9123")
    config = resolve("l4")
    assert (config["http_options"]["host"], config["http_options"]["port"]) == ("0.0.0.0", 9123)
    monkeypatch.delenv("PORT")
    assert resolve("l4")["http_options"]["port"] == 8080
    servers: list[dict] = []

    def llm_server(spec_options, gpu_share, serving):
        servers.append(vllm_stage.vllm_llm_config_dict(spec_options, gpu_share, serving))
        return _PlaceholderServer.bind()

    monkeypatch.setattr(vllm_stage, "build_vllm_stage", llm_server)
    deployments = _deployments("l4")
    assert set(deployments) == DEPLOYMENTS | {"Placeholder"}
    gpus = {n: d.ray_actor_options.get("num_gpus", 0) * d.num_replicas for n, d in deployments.items()}
    assert gpus["TTS"] > 0 and gpus["Avatar"] > 0 and gpus["ASR"] > 0
    assert gpus["Ingress"] == gpus["Conversation"] == gpus["LLM"] == 0  # the adapter holds no GPU
    (server,) = servers
    llm_share = sum(bundle.get("GPU", 0) for bundle in server["placement_group_config"]["bundles"])
    assert llm_share == pytest.approx(0.55)
    assert server["engine_kwargs"]["gpu_memory_utilization"] <= llm_share
    assert sum(gpus.values()) + llm_share <= 1.0


@serve.deployment(name="Placeholder")
class _PlaceholderServer:
    """Stands in for vLLM's LLMServer deployment, which cannot be built on a machine without vLLM."""


def test_stage_limits_come_from_the_engine_config_and_its_env_overrides(monkeypatch):
    monkeypatch.setenv("AVATAR_SERVE__DEPLOYMENTS__TTS__MAX_QUEUED_REQUESTS", "9")
    monkeypatch.setenv("AVATAR_SERVE__DEPLOYMENTS__AVATAR__NUM_REPLICAS", "2")
    deployments = _deployments("cpu")
    assert deployments["TTS"].max_queued_requests == 9
    assert deployments["Avatar"].num_replicas == 2


def test_unknown_profile_and_unset_variable_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown serve profile"):
        resolve("tpu")
    broken = tmp_path / "serve.yaml"
    broken.write_text("applications: []\nprofiles:\n  x:\n    http_options: {port: '${NO_SUCH_VAR}'}\n")
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_VAR"):
        resolve("x", broken)


def test_settings_honour_the_profile_argument_without_touching_the_environment(monkeypatch):
    monkeypatch.setenv("AVATAR_PROFILE", "cpu")
    before = dict(os.environ)
    settings = Settings(profile="l4")
    assert (settings.profile, settings.tts.name, settings.llm.name) == ("l4", "xtts-v2", "vllm")
    assert dict(os.environ) == before
    assert Settings().tts.name == "bundled"  # and the environment's profile still rules without one


def test_stages_are_declared_once_and_every_one_needs_its_serve_entry(tmp_path, monkeypatch):
    settings = Settings()
    assert settings.stages == ["asr", "llm", "tts", "avatar"]
    assert set(settings.serve.deployments) == {*settings.stages, "ingress", "conversation", "realtime"}
    broken = tmp_path / "avatar.yaml"
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    del document["defaults"]["serve"]["deployments"]["llm"]
    broken.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("AVATAR_CONFIG", str(broken))
    with pytest.raises(ValueError, match="no entry for llm"):
        Settings()


def test_a_stage_listed_before_what_it_needs_is_refused(monkeypatch):
    monkeypatch.setenv("AVATAR_STAGES", '["asr", "llm", "avatar", "tts"]')
    with pytest.raises(ValueError, match="needs tts"):
        _deployments("cpu")


def test_an_engine_named_from_the_environment_does_not_inherit_the_yaml_engines_options(monkeypatch):
    monkeypatch.setenv("AVATAR_LLM__NAME", "openai-compatible")
    monkeypatch.setenv("AVATAR_LLM__OPTIONS__BASE_URL", "http://127.0.0.1:8080/v1")
    llm = Settings().llm
    assert (llm.name, llm.options) == ("openai-compatible", {"base_url": "http://127.0.0.1:8080/v1"})
    monkeypatch.setenv("AVATAR_LLM__NAME", "llama-cpp")  # the same engine: its options stay
    assert Settings().llm.options["model"] == "smollm2-135m"
