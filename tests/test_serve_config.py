"""serve_config.yaml: both profiles resolve to valid Serve configs and build the whole graph (no Ray
cluster, no GPU: the app is built the way Serve's controller builds it, then inspected)."""

import pytest
from ray.serve._private.build_app import build_app as serve_build
from ray.serve.schema import ServeDeploySchema

from graphs.launch import build_application, resolve

STAGES = {"Ingress", "ASR", "TTS", "Avatar"}


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
    assert set(deployments) == STAGES
    options = {name: d.ray_actor_options for name, d in deployments.items()}
    assert all(not o.get("num_gpus") for o in options.values())
    assert 0 < sum(o["num_cpus"] * deployments[n].num_replicas for n, o in options.items()) <= 2


def test_l4_profile_shares_one_gpu_and_listens_on_cloud_runs_port(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    config = resolve("l4")
    assert (config["http_options"]["host"], config["http_options"]["port"]) == ("0.0.0.0", 9123)
    monkeypatch.delenv("PORT")
    assert resolve("l4")["http_options"]["port"] == 8080
    deployments = _deployments("l4")
    gpus = {n: d.ray_actor_options.get("num_gpus", 0) * d.num_replicas for n, d in deployments.items()}
    assert gpus["TTS"] > 0 and gpus["Avatar"] > 0 and gpus["ASR"] > 0 and gpus["Ingress"] == 0
    # What stays free of the one L4 is the LLM's share (about 0.55).
    assert sum(gpus.values()) <= 0.5


def test_stage_limits_come_from_the_engine_config_and_its_env_overrides(monkeypatch):
    monkeypatch.setenv("AVATAR_SERVE__TTS__MAX_QUEUED_REQUESTS", "9")
    monkeypatch.setenv("AVATAR_SERVE__AVATAR__NUM_REPLICAS", "2")
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
