"""Deploy files (issue 13): Terraform, Dockerfiles, compose, KubeRay, the cost estimate and the drain.

Nothing here reaches a cloud or a registry, and there is no terraform CLI or docker daemon: the Terraform
is parsed with python-hcl2 and scanned with checkov (its own venv, scripts/setup.sh), the Dockerfiles are
linted with hadolint and read as text, and the invariants that keep them in step with the app's own
config (avatar.yaml, serve_config.yaml, pyproject.toml) are asserted here.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import hcl2
import httpx
import pytest
import yaml

from graphs import launch
from realtime_avatar import costs
from realtime_avatar.config import Settings
from signaling import gcp_auth

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = ("Dockerfile", "Dockerfile.web", "Dockerfile.turn")
# Plain values: strings without their quotes, blocks as lists, no comments.
HCL = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


# --- Terraform ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """Every .tf file merged: resources by type and name, variables, locals, outputs."""
    merged: dict[str, Any] = {"resource": {}, "variable": {}, "locals": {}, "output": {}}
    for path in sorted(INFRA.glob("*.tf")):
        with path.open() as handle:
            document = hcl2.load(handle, serialization_options=HCL)
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    merged["resource"].setdefault(kind, {})[name] = body
        for block in document.get("variable", []):
            merged["variable"].update(block)
        for block in document.get("locals", []):
            merged["locals"].update(block)
        for block in document.get("output", []):
            merged["output"].update(block)
    return merged


def _one(value: Any) -> Any:
    """python-hcl2 gives a nested block as a list of one dict."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _var_default(tf: dict[str, Any], name: str) -> Any:
    return tf["variable"][name]["default"]


def _strip(expr: Any) -> str:
    return str(expr).removeprefix("${").removesuffix("}")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def l4() -> Settings:
    return Settings(profile="l4")


def test_runtime_is_one_l4_without_zonal_redundancy_scaled_to_zero(tf: dict[str, Any], l4: Settings) -> None:
    template = _one(tf["resource"]["google_cloud_run_v2_service"]["runtime"]["template"])
    assert _one(template["node_selector"])["accelerator"] == "nvidia-l4"
    assert template["gpu_zonal_redundancy_disabled"] is True
    scaling = _one(template["scaling"])
    assert scaling["min_instance_count"] == 0
    assert _strip(scaling["max_instance_count"]) == "var.max_instances"
    container = _one(template["containers"])
    resources = _one(container["resources"])
    limits = resources["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert resources["cpu_idle"] is False  # instance-based billing, which a GPU requires
    assert _strip(limits["cpu"]) == "tostring(var.runtime_cpu)" and _var_default(tf, "runtime_cpu") >= 4
    assert "var.runtime_memory_gib" in limits["memory"] and _var_default(tf, "runtime_memory_gib") >= 16
    # A whole session fits in one request (a call's stream), and Cloud Run allows at most an hour.
    assert "var.request_timeout_s" in template["timeout"]
    assert l4.chat.max_session_minutes * 60 <= _var_default(tf, "request_timeout_s") <= 3600


def test_runtime_sizes_and_budget_match_the_cost_config(tf: dict[str, Any], l4: Settings) -> None:
    assert l4.cost is not None
    assert _var_default(tf, "runtime_cpu") == l4.cost.instance.vcpu
    assert _var_default(tf, "runtime_memory_gib") == l4.cost.instance.memory_gib
    assert _var_default(tf, "max_instances") == l4.cost.instance.max_instances
    assert _var_default(tf, "monthly_budget_usd") == l4.cost.monthly_budget_usd == 100


def test_runtime_port_probe_and_shm_match_the_app(tf: dict[str, Any], l4: Settings) -> None:
    template = _one(tf["resource"]["google_cloud_run_v2_service"]["runtime"]["template"])
    container = _one(template["containers"])
    port = _one(container["ports"])["container_port"]
    serve_l4 = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["profiles"]["l4"]
    assert serve_l4["http_options"]["port"] == "${PORT:-8080}" and port == 8080  # Cloud Run sets PORT
    probe = _one(container["startup_probe"])
    assert _one(probe["http_get"])["path"] == "/readyz" and _one(probe["http_get"])["port"] == port
    assert probe["failure_threshold"] * probe["period_seconds"] <= 240  # Cloud Run's startup probe limit
    # The startup budget leaves room for the cold start the cost estimate assumes.
    assert probe["failure_threshold"] * probe["period_seconds"] >= 4 * l4.cost.usage.cold_start_s
    assert _one(container["liveness_probe"])["http_get"][0]["path"] == "/healthz"
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
    volumes = {v["name"]: _one(v["empty_dir"]) for v in template["volumes"]}
    shm = [name for name, path in mounts.items() if path == "/dev/shm"]
    assert len(shm) == 1 and volumes[shm[0]]["medium"] == "MEMORY"
    assert "var.shm_size_gib" in volumes[shm[0]]["size_limit"]
    assert l4.serve.object_store_mb is not None
    assert l4.serve.object_store_mb < _var_default(tf, "shm_size_gib") * 1024  # Ray stays in /dev/shm
    assert l4.serve.drain_timeout_s < 10  # Cloud Run's SIGKILL comes 10 s after SIGTERM


def test_fast_cold_start_keeps_compilation_off_through_real_config_keys(tf: dict[str, Any]) -> None:
    env = _env(_one(_one(tf["resource"]["google_cloud_run_v2_service"]["runtime"]["template"])["containers"]))
    assert _var_default(tf, "fast_cold_start") is True
    overrides = {"AVATAR_LLM__OPTIONS__ENFORCE_EAGER": "true", "AVATAR_AVATAR__OPTIONS__COMPILE": "false"}
    for name in overrides:
        assert "var.fast_cold_start" in env[name]["value"]
    with pytest.MonkeyPatch.context() as patch:  # the names reach the l4 engines' options
        for name, value in overrides.items():
            patch.setenv(name, value)
        settings = Settings(profile="l4")
    assert settings.llm.options["enforce_eager"] is True and settings.avatar.options["compile"] is False


def test_runtime_is_not_public_and_only_the_web_account_invokes_it(tf: dict[str, Any]) -> None:
    members = tf["resource"].get("google_cloud_run_v2_service_iam_member", {})
    on_runtime = [m for m in members.values() if "google_cloud_run_v2_service.runtime" in str(m["name"])]
    assert [(m["role"], m["member"]) for m in on_runtime] == [
        ("roles/run.invoker", "serviceAccount:${google_service_account.web.email}")]
    everything = json.dumps(tf["resource"])
    public = [m for m in members.values() if m["member"] in ("allUsers", "allAuthenticatedUsers")]
    assert all("google_cloud_run_v2_service.web" in str(m["name"]) for m in public) and public
    # No project-wide invoker or editor roles that would reach the runtime another way.
    for binding in tf["resource"].get("google_project_iam_member", {}).values():
        assert binding["role"] in ("roles/logging.logWriter", "roles/monitoring.metricWriter"), binding
    assert "roles/editor" not in everything and "roles/owner" not in everything


def test_web_service_reaches_the_runtime_with_its_caps_from_avatar_yaml(tf: dict[str, Any]) -> None:
    web = tf["resource"]["google_cloud_run_v2_service"]["web"]
    env = _env(_one(_one(web["template"])["containers"]))
    assert _strip(env["SIGNALING_RUNTIME_URL"]["value"]) == "google_cloud_run_v2_service.runtime.uri"
    assert env["SIGNALING_RUNTIME_AUTH"]["value"] == gcp_auth.MODE
    assert "local.chat.max_session_minutes" in env["SIGNALING_MAX_SESSION_MINUTES"]["value"]
    assert "local.chat.max_sessions" in env["SIGNALING_MAX_SESSIONS"]["value"]
    assert "realtime_avatar/avatar.yaml" in tf["locals"]["avatar"]
    assert _strip(tf["locals"]["chat"]) == "local.avatar.defaults.chat"


def _all_env(tf: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for service in tf["resource"]["google_cloud_run_v2_service"].values():
        for container in _one(service["template"])["containers"]:
            found += container.get("env", [])
    return found


def test_no_secret_in_plain_text(tf: dict[str, Any]) -> None:
    secretish = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.I)
    for env in _all_env(tf):
        if secretish.search(env["name"]):
            assert "value" not in env, env["name"]
            ref = _one(_one(env["value_source"])["secret_key_ref"])
            assert "google_secret_manager_secret." in ref["secret"], env["name"]
    # No variable carries a secret, and the secret versions come from generated passwords.
    assert not [name for name in tf["variable"] if secretish.search(name)]
    for version in tf["resource"]["google_secret_manager_secret_version"].values():
        assert _strip(version["secret_data"]).startswith("random_password.")
    names = {s["secret_id"] for s in tf["resource"]["google_secret_manager_secret"].values()}
    assert names == {"${var.name}-session-signing-key", "${var.name}-turn-secret"}
    conf = [line for line in (INFRA / "coturn/turnserver.conf").read_text().splitlines()
            if not line.startswith("#")]
    assert "use-auth-secret" in conf and not [line for line in conf if "static-auth-secret" in line]
    assert "TURN_SECRET" not in (ROOT / "Dockerfile.turn").read_text().split("CMD")[0]


def test_buckets_are_private_uniform_with_lifecycle(tf: dict[str, Any], l4: Settings) -> None:
    buckets = tf["resource"]["google_storage_bucket"]
    assert set(buckets) == {"assets", "weights"}
    for bucket in buckets.values():
        assert bucket["uniform_bucket_level_access"] is True
        assert bucket["public_access_prevention"] == "enforced"
        assert bucket["lifecycle_rule"]
    clips = [r for r in buckets["assets"]["lifecycle_rule"] if "matches_prefix" in _one(r["condition"])]
    assert clips and "local.avatar.defaults.store.prefix" in _one(clips[0]["condition"])["matches_prefix"][0]
    assert l4.store.prefix == yaml.safe_load((ROOT / "realtime_avatar/avatar.yaml").read_text())[
        "defaults"]["store"]["prefix"]
    iam = tf["resource"]["google_storage_bucket_iam_member"]
    assert iam["runtime_weights"]["role"] == "roles/storage.objectViewer"  # the runtime never writes weights


def test_budget_alerts_at_50_90_100_percent(tf: dict[str, Any]) -> None:
    budget = tf["resource"]["google_billing_budget"]["monthly"]
    assert sorted(r["threshold_percent"] for r in budget["threshold_rules"]) == [0.5, 0.9, 1.0]
    units = _one(_one(budget["amount"])["specified_amount"])["units"]
    assert "var.monthly_budget_usd" in units
    assert _one(budget["budget_filter"])["calendar_period"] == "MONTH"


def _conf_ports() -> tuple[int, int]:
    conf = dict(line.split("=", 1) for line in (INFRA / "coturn/turnserver.conf").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    return int(conf["min-port"]), int(conf["max-port"])


def test_turn_vm_opens_only_coturn_ports_on_its_static_ip(tf: dict[str, Any]) -> None:
    low, high = _conf_ports()
    firewalls = tf["resource"]["google_compute_firewall"]
    assert list(firewalls) == ["turn"]
    allows = {a["protocol"]: sorted(a["ports"]) for a in firewalls["turn"]["allow"]}
    assert allows == {"udp": sorted(["3478", f"{low}-{high}"]), "tcp": ["3478"]}
    assert firewalls["turn"]["direction"] == "INGRESS"
    vm = tf["resource"]["google_compute_instance"]["turn"]
    nic = _one(vm["network_interface"])
    assert _strip(_one(nic["access_config"])["nat_ip"]) == "google_compute_address.turn.address"
    assert _one(vm["service_account"])["email"] == "${google_service_account.turn.email}"
    assert vm["metadata"]["block-project-ssh-keys"] == "true"
    startup = (INFRA / "turn-startup.sh.tftpl").read_text()
    assert "apt-get install" in startup and "coturn" in startup
    assert "secretmanager.googleapis.com" in startup and "static-auth-secret=$secret" in startup


def test_site_path_is_provisioned_one_way_and_documented_both(tf: dict[str, Any]) -> None:
    neg = tf["resource"]["google_compute_region_network_endpoint_group"]["web"]
    assert neg["network_endpoint_type"] == "SERVERLESS" and "var.site_behind_gcp_lb" in neg["count"]
    nginx = tf["output"]["reverse_proxy_nginx"]["value"]
    assert "location /avatar/" in nginx and "proxy_buffering off" in nginx
    assert "/avatar/*" in tf["output"]["lb_path_rule"]["value"]


def test_checkov_finds_nothing_unexplained() -> None:
    """Every check passes or is skipped in the code with a reason. Offline, checkov has no severities
    (they come from its vendor's API), so every failed check counts, not only the high ones."""
    assert CHECKOV.exists(), "scripts/setup.sh creates .venv-checkov (checkov conflicts with our pins)"
    run = subprocess.run([str(CHECKOV), "-d", str(INFRA), "--framework", "terraform", "--skip-download",
                          "-o", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results.get("failed_checks", [])]
    assert failed == [], failed
    assert report["summary"]["passed"] >= 40  # it really scanned the resources
    skips = re.findall(r"#checkov:skip=(CKV_\w+):(.*)", "\n".join(p.read_text() for p in INFRA.glob("*.tf")))
    assert len(skips) == len(results["skipped_checks"]) == report["summary"]["skipped"] >= 1
    assert all(len(reason.strip()) >= 40 for _, reason in skips), skips


# --- Dockerfiles --------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for word, rest in _instructions(path):
        if word == "FROM":
            current = rest.split(" AS ")[-1] if " AS " in rest else rest
            stages[current] = []
        elif current:
            stages[current].append((word, rest))
    return stages


def test_hadolint_passes_on_every_dockerfile() -> None:
    run = subprocess.run([str(HADOLINT), *DOCKERFILES], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in DOCKERFILES:  # every ignore says why on the line above it
        lines = (ROOT / name).read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                assert lines[i - 1].startswith("#") and len(lines[i - 1]) > 30, (name, line)


def _pip_install_lines(stage: list[tuple[str, str]]) -> list[list[str]]:
    return [shlex.split(rest.split("&&")[0])[2:] for word, rest in stage
            if word == "RUN" and rest.startswith("pip install")]


def _args(path: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest)


def test_gpu_image_installs_the_gpu_extra_with_one_cuda12_torch() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    torch_pin = next(r for r in extras["dev"] if r.startswith("torch=="))
    vllm_pin = next(r for r in extras["gpu"] if r.startswith("vllm=="))
    stages = _stages(ROOT / "Dockerfile")
    args = _args(ROOT / "Dockerfile")
    lines = _pip_install_lines(stages["build-l4"])
    assert len(lines) == 1, "one resolve, so pip cannot pick a second torch"
    line = [a.replace("${TORCH_INDEX}", args["TORCH_INDEX"]).replace("${VLLM_WHEEL}", args["VLLM_WHEEL"])
            for a in lines[0]]
    torches = [a for a in line if re.match(r"torch\b", a)]
    assert torches == [f"{torch_pin}+cu129"], torches
    cuda = re.search(r"\+cu(\d+)$", torches[0]).group(1)
    assert cuda.startswith("12"), "Cloud Run's L4 driver 535 runs CUDA 12.x only"
    assert args["TORCH_INDEX"].endswith(f"/cu{cuda}")
    vllm = next(a for a in line if a.startswith("vllm @ "))
    assert f"/vllm-{vllm_pin.split('==')[1]}+cu{cuda}-" in vllm
    project = line[line.index("-e") + 1]
    installed = set(re.fullmatch(r"\.\[(.*)\]", project).group(1).split(","))
    assert "gpu" in installed and "xtts" in installed  # the l4 profile's TTS is XTTS-v2
    assert not installed & {"dev", "eval"}  # test tools and the evaluator stay out of the image
    # Neither the gpu nor the xtts extra names torch itself: the one pin above is the only torch.
    assert not [r for name in installed for r in extras[name] if re.match(r"torch\b", r)]
    # The cpu target installs no torch at all.
    assert _pip_install_lines(stages["build-cpu"]) == [["-e", "."]]


def _final(stage: list[tuple[str, str]], word: str) -> str:
    return [rest for w, rest in stage if w == word][-1]


def test_runtime_images_run_the_profiles_as_non_root_on_the_app_ports() -> None:
    stages = _stages(ROOT / "Dockerfile")
    assert list(stages)[-1] == "l4"  # `docker build .` builds the GPU image
    base = stages["runtime-base"]
    assert json.loads(_final(base, "ENTRYPOINT")) == ["tini", "--"]
    assert "useradd --uid 10001" in _final(base, "RUN")
    l4, cpu = stages["l4"], stages["cpu"]
    assert json.loads(_final(l4, "CMD")) == ["avatar", "serve", "--profile", "l4"]
    assert _final(l4, "USER") == "10001" and _final(cpu, "USER") == "10001"
    assert _final(l4, "EXPOSE") == "8080" and "PORT=8080" in _final(base, "ENV")
    assert ("RUN", "avatar models check --profile l4") in l4  # missing weights fail the build
    assert any(w == "COPY" and rest.startswith("build/models ") for w, rest in l4)
    assert "--profile cpu --host 0.0.0.0 --port 8000" in _final(cpu, "CMD")
    assert _final(cpu, "EXPOSE") == "8000"
    assert "/readyz" in _final(l4, "HEALTHCHECK")


def test_web_image_has_signaling_and_the_page_but_no_torch() -> None:
    stages = _stages(ROOT / "Dockerfile.web")
    web = stages["web"]
    assert [line for line in _pip_install_lines(web)] == [["-r", "signaling/requirements.txt"]]
    requirements = (ROOT / "signaling/requirements.txt").read_text().lower()
    assert not re.search(r"^(torch|ray|vllm)\b", requirements, re.M)
    copies = [rest for w, rest in web if w == "COPY"]
    assert "signaling signaling" in copies and "--from=page /web/dist web/dist" in copies
    assert not [c for c in copies if c.startswith(("engines", "realtime_avatar", "deployments", "."))]
    assert "npm run build" in [rest for w, rest in stages["page"] if w == "RUN"]
    assert "python -m signaling --host 0.0.0.0" in _final(web, "CMD") and _final(web, "USER") == "10001"


def test_dockerignore_sends_what_the_images_copy() -> None:
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for name in DOCKERFILES:
        for word, rest in _instructions(ROOT / name):
            if word == "COPY" and not rest.startswith("--from"):
                for source in shlex.split(rest)[:-1]:
                    if not source.startswith("--"):
                        top = source.rstrip("/").split("/")[0]
                        assert any(a == source.rstrip("/") or a.split("/")[0] == top for a in allowed), source


# --- docker compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_cpu_runtime_signaling_and_coturn(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"runtime", "signaling", "coturn"}
    runtime, signaling, coturn = services["runtime"], services["signaling"], services["coturn"]
    assert runtime["build"]["target"] == "cpu" and runtime["environment"]["AVATAR_PROFILE"] == "cpu"
    assert runtime["expose"] == ["8000"] and "ports" not in runtime  # only signaling reaches it
    assert signaling["environment"]["SIGNALING_RUNTIME_URL"] == "http://runtime:8000"
    assert signaling["ports"] == ["127.0.0.1:8080:8080"] and signaling["environment"]["PORT"] == "8080"
    assert signaling["build"]["dockerfile"] == "Dockerfile.web"
    assert coturn["build"]["dockerfile"] == "Dockerfile.turn"


def test_compose_keeps_weights_and_assets_on_named_volumes(compose: dict[str, Any]) -> None:
    runtime = compose["services"]["runtime"]
    cache = runtime["environment"]["AVATAR_CACHE_DIR"]
    mounts = dict(v.split("#")[0].strip().split(":")[::-1] for v in runtime["volumes"])
    assert mounts == {f"{cache}/models": "models", f"{cache}/assets": "assets"}  # store: <cache_dir>/assets
    assert set(compose["volumes"]) == {"models", "assets"}


def test_compose_object_store_fits_shm_and_drain_fits_the_grace_period(compose: dict[str, Any]) -> None:
    runtime = compose["services"]["runtime"]
    shm_mb = int(runtime["shm_size"].removesuffix("gb")) * 1024
    assert int(runtime["environment"]["AVATAR_SERVE__OBJECT_STORE_MB"]) < shm_mb
    grace = float(runtime["stop_grace_period"].removesuffix("s"))
    assert float(runtime["environment"]["AVATAR_SERVE__DRAIN_TIMEOUT_S"]) < grace


def test_compose_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"SECRET|PASSWORD|KEY", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]+|:-)\}", value), (name, key, value)


# --- KubeRay ------------------------------------------------------------------------------------------


def test_kuberay_serves_the_same_app_with_autoscaled_stages(l4: Settings) -> None:
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load((INFRA / "kuberay/rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    ours = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]
    app = serve_config["applications"][0]
    assert app["import_path"] == ours["import_path"] and app["args"] == {"profile": "l4"}
    deployments = {d["name"]: d for d in app["deployments"]}
    names = {"asr": "ASR", "tts": "TTS", "avatar": "Avatar", "llm": "LLMServer"}
    for stage in l4.stages:  # every model stage scales with load
        assert "autoscaling_config" in deployments[names[stage]], stage
    assert deployments["Conversation"]["num_replicas"] == 1  # it holds the sessions
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    workers = cluster["workerGroupSpecs"][0]
    spec = workers["template"]["spec"]
    assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert workers["minReplicas"] == 0
    assert {v["name"]: v["emptyDir"]["medium"] for v in spec["volumes"]} == {"dshm": "Memory"}


# --- avatar cost ---------------------------------------------------------------------------------------


def _estimate(l4: Settings, **kw: Any) -> costs.Estimate:
    assert l4.cost is not None
    caps = {"max_session_minutes": l4.chat.max_session_minutes, "max_sessions": l4.chat.max_sessions}
    return costs.estimate(l4.cost, **{**caps, **kw})


def test_cost_prices_carry_source_and_date(l4: Settings) -> None:
    assert l4.cost is not None
    for name, price in l4.cost.prices:
        if isinstance(price, costs.Price):
            assert price.source and re.fullmatch(r"20\d\d-\d\d", price.date), name


def test_cost_of_one_session_is_cold_start_plus_session_plus_idle_window(l4: Settings) -> None:
    assert l4.cost is not None
    usage = l4.cost.usage
    one = _estimate(l4, sessions=1, minutes=10)
    billed_s = usage.cold_start_s + 600 + usage.idle_after_session_s
    assert one.items[0].usd == pytest.approx(billed_s * costs.runtime_rate(l4.cost))
    assert one.cold_starts == 1 and one.served == 1
    none = _estimate(l4, sessions=0)
    assert none.monthly_usd == pytest.approx(none.fixed_usd) and none.fixed_usd > 5  # TURN VM, IP, storage


def test_cost_grows_with_sessions_but_shared_idle_windows_make_sessions_cheaper(l4: Settings) -> None:
    rows = [_estimate(l4, sessions=n, minutes=10) for n in (50, 200, 1000)]
    assert rows[0].monthly_usd < rows[1].monthly_usd < rows[2].monthly_usd
    per = [r.items[0].usd / r.sessions for r in rows]
    assert per[0] > per[1] > per[2]  # more sessions share instances and idle windows
    assert rows[2].cold_starts < 1000


def test_cost_uses_the_runtime_caps(l4: Settings) -> None:
    capped = _estimate(l4, sessions=10, minutes=500)
    assert capped.capped and capped.minutes == l4.chat.max_session_minutes
    # One session at a time per instance and one instance: simultaneous arrivals are refused.
    crowded = _estimate(l4, sessions=2000, minutes=30, max_sessions=1)
    assert crowded.refused > 0 and crowded.served + crowded.refused == pytest.approx(2000)


def test_sessions_within_budget_is_the_largest_that_fits(l4: Settings) -> None:
    assert l4.cost is not None
    caps = {"max_session_minutes": l4.chat.max_session_minutes, "max_sessions": l4.chat.max_sessions}
    n = costs.sessions_within_budget(l4.cost, **caps)
    assert _estimate(l4, sessions=n).monthly_usd <= l4.cost.monthly_budget_usd
    assert _estimate(l4, sessions=n + 1).monthly_usd > l4.cost.monthly_budget_usd


def test_readme_cost_table_is_what_avatar_cost_prints(l4: Settings) -> None:
    readme = (ROOT / "README.md").read_text()
    table = costs.format_table([_estimate(l4, sessions=n, minutes=10) for n in (50, 200, 1000)])
    assert table in readme, "regenerate README's table with `make cost`"


# --- drain and the runtime's ID token -------------------------------------------------------------------


def test_bounded_drain_gives_up_after_its_timeout() -> None:
    overruns: list[bool] = []
    started = time.monotonic()
    assert launch.bounded(lambda: time.sleep(5), 0.2, lambda: overruns.append(True)) is False
    assert overruns == [True] and time.monotonic() - started < 2
    assert launch.bounded(lambda: None, 2, lambda: overruns.append(True)) is True and overruns == [True]


def test_id_token_is_minted_once_and_sent_on_every_runtime_request() -> None:
    minted: list[httpx.Request] = []
    now = [0.0]

    def metadata(request: httpx.Request) -> httpx.Response:
        minted.append(request)
        return httpx.Response(200, text=f"token-{len(minted)}\n")

    seen: list[str] = []

    def runtime(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"status": "ok"})

    async def scenario() -> None:
        auth = gcp_auth.GoogleIdToken("https://avatar-runtime.run.app", httpx.MockTransport(metadata),
                                      clock=lambda: now[0])
        async with httpx.AsyncClient(transport=httpx.MockTransport(runtime), auth=auth,
                                     base_url="https://avatar-runtime.run.app") as client:
            await client.get("/readyz")
            await client.get("/readyz")
            now[0] += gcp_auth.TOKEN_REUSE_S + 1
            await client.get("/readyz")
        await auth.aclose()

    asyncio.run(scenario())
    assert seen == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    assert minted[0].headers["Metadata-Flavor"] == "Google"
    assert minted[0].url.params["audience"] == "https://avatar-runtime.run.app"


def test_id_token_only_when_asked() -> None:
    assert gcp_auth.from_env("https://x", {}) is None
    assert gcp_auth.from_env("https://x", {gcp_auth.ENV: "none"}) is None
    assert isinstance(gcp_auth.from_env("https://x", {gcp_auth.ENV: gcp_auth.MODE}), gcp_auth.GoogleIdToken)
    with pytest.raises(ValueError, match="expected"):
        gcp_auth.from_env("https://x", {gcp_auth.ENV: "iam"})
