"""``avatar serve``: resolve a profile of ``serve_config.yaml`` and run it with Ray Serve.

The resolved document is a plain Serve config (validated with Serve's own schema), so what runs
here is what ``serve deploy`` would run on a cluster (``--print-config`` writes it out).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from realtime_avatar.config import deep_merge

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "serve_config.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "deployments.edge:proxy_middlewares"
# A local Ray (make run, avatar serve, the tests) keeps its ports on loopback: with a node address of
# 127.0.0.1, GCS, raylet, object manager, workers, agents and the metrics export bind 127.0.0.1 (see
# _local_ray_init), no dashboard. Only Serve's HTTP port is the API (serve_config.yaml's
# http_options.host: 127.0.0.1 here, 0.0.0.0 in the l4 container).
LOCAL_RAY: dict[str, Any] = {"_node_ip_address": "127.0.0.1", "include_dashboard": False,
                             "log_to_driver": False}


def _expand(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name, default)
        if found is None:
            raise ValueError(f"serve config needs ${{{name}}}: set it or give a default (${{{name}:-...}})")
        return found

    expanded = _VARIABLE.sub(substitute, value)
    return yaml.safe_load(expanded) if expanded != value else value  # "8080" -> 8080


def resolve(profile: str, path: Path = SERVE_CONFIG) -> dict[str, Any]:
    """The Serve config of ``profile``: the top level with ``profiles[profile]`` merged on top."""
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load(path.read_text()) or {}
    profiles = document.pop("profiles", {}) or {}
    if profile not in profiles:
        raise ValueError(f"unknown serve profile {profile!r} in {path}; known: {', '.join(profiles)}")
    resolved = _expand(deep_merge(document, profiles[profile] or {}))
    ServeDeploySchema.model_validate(resolved)
    return resolved


def build_application(app: dict[str, Any]) -> Any:
    module_name, attr = app["import_path"].split(":", 1)
    return getattr(importlib.import_module(module_name), attr)(app.get("args") or {})


def free_port() -> int:
    """A loopback port nothing listens on now: for local runs beside others (tests, benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=10) as response:
            return response.status == 200
    except (OSError, ValueError):  # refused, timed out, or 503 (HTTPError is an OSError)
        return False


def wait_ready(base_url: str, timeout_s: float = 120) -> None:
    """Until ``/readyz`` says every stage answers (e.g. after Serve replaced a replica)."""
    deadline = time.monotonic() + timeout_s
    while not is_ready(base_url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} did not become ready in {timeout_s:g} s")
        time.sleep(0.5)


def curl_example(base_url: str) -> str:
    return (f"curl -sS -X POST {base_url}/v1/render -H 'Content-Type: application/json' "
            "-d '{\"text\": \"Hello! I am a realtime avatar.\", \"language\": \"en\"}' -o hello.mp4")


def chat_example(base_url: str) -> str:
    return f".venv/bin/avatar chat --url {base_url} --lang es -m 'Hola, ¿qué haces en tu trabajo?'"


@contextlib.contextmanager
def running(config: dict[str, Any], object_store_mb: int | None = None) -> Iterator[str]:
    """Start the config's apps with Ray Serve (a local Ray unless RAY_ADDRESS names a cluster), yield
    the base URL once they are deployed, and shut down what was started. ``object_store_mb`` sizes a
    local Ray's object store (it must fit in /dev/shm in a container)."""
    import ray
    from ray import serve

    started_ray = not ray.is_initialized()
    if started_ray:
        # Serve's proxy guards the API's edge (deployments.edge: slow bodies, keys, request ids) before
        # any replica sees a request, with the settings of the profile the app is built with.
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
        address = os.environ.get("RAY_ADDRESS")
        local = dict(LOCAL_RAY)
        if object_store_mb:
            local["object_store_memory"] = object_store_mb * 1024 * 1024
        # Ray's processes (the proxy among them) inherit this environment as ray.init starts them.
        profile = (config["applications"][0].get("args") or {}).get("profile")
        with _environment({"AVATAR_PROFILE": str(profile)} if profile else {}):
            ray.init(address=address) if address else _local_ray_init(local)
    http = config.get("http_options", {})
    try:
        serve.start(http_options=http, proxy_location=config.get("proxy_location", "HeadOnly"))
        for app in config["applications"]:
            serve.run(build_application(app), name=app["name"], route_prefix=app.get("route_prefix", "/"))
        host = http.get("host", "127.0.0.1")
        yield f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{http.get('port', 8000)}"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        if started_ray:
            ray.shutdown()


def bounded(work: Callable[[], object], timeout_s: float, on_overrun: Callable[[], object]) -> bool:
    """Run ``work`` in a daemon thread; True if it finished within ``timeout_s``, else call
    ``on_overrun`` (which exits the process in ``serve_forever``) and return False."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    threading.Thread(target=run, name="drain", daemon=True).start()
    if done.wait(timeout_s):
        return True
    on_overrun()
    return False


def _exit_now() -> None:
    print("drain timeout: exiting with calls still in flight", file=sys.stderr, flush=True)
    os._exit(0)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` where not set already, for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _local_ray_init(options: dict[str, Any]) -> None:
    """``ray.init`` of a local one-node Ray that listens on loopback only.

    Ray 2.60's ``ray.init`` replaces a loopback ``_node_ip_address`` by the machine's routable address
    (``services.resolve_ip_for_localhost``, meant for nodes that others must reach), and every Ray server
    then listens on all interfaces. Given 127.0.0.1 as it is, they bind 127.0.0.1 (tests/test_hardening.py
    checks every listening socket of the Ray processes).
    """
    import ray
    from ray._private import services

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host
    try:
        ray.init(**options)
    finally:
        services.resolve_ip_for_localhost = resolve


def serve_forever(config: dict[str, Any], object_store_mb: int | None = None,
                  drain_timeout_s: float = 8.0) -> None:
    print("starting Ray Serve and the deployments (the first start loads the models)...", file=sys.stderr,
          flush=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        base_url = stack.enter_context(running(config, object_store_mb))
        print(f"serving on {base_url} (ready in {time.perf_counter() - started:.0f} s); "
              f"API docs: {base_url}/docs")
        print(f"render an MP4:\n  {curl_example(base_url)}")
        print(f"chat (reply text here, clips in out/chat/):\n  {chat_example(base_url)}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        # SIGTERM (Cloud Run scaling in, docker stop): Serve lets replicas finish the calls in flight
        # (graceful_shutdown_timeout_s), but never past drain_timeout_s: Cloud Run kills at 10 s anyway.
        print(f"shutting down (calls in flight get {drain_timeout_s:g} s)...", file=sys.stderr, flush=True)
        bounded(stack.close, drain_timeout_s, _exit_now)


def main(profile: str, config_path: Path | None, print_config: bool, port: int | None = None,
         host: str | None = None) -> int:
    config = resolve(profile, config_path or SERVE_CONFIG)
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    if print_config:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    from realtime_avatar.config import Settings

    serving = Settings(profile=profile).serve
    serve_forever(config, serving.object_store_mb, serving.drain_timeout_s)
    return 0
