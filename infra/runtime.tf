# The GPU runtime: `avatar serve --profile l4` (Ray head + Serve app) on one L4, scaled to zero when idle.
# Not publicly invokable: only the web service's account holds run.invoker on it (iam.tf).
resource "google_cloud_run_v2_service" "runtime" {
  name                = "${var.name}-runtime"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL" # reached by the web service over HTTPS with an ID token
  deletion_protection = false
  labels              = local.labels

  template {
    service_account                  = google_service_account.runtime.email
    timeout                          = "${var.request_timeout_s}s"
    max_instance_request_concurrency = 80 # every call's requests go to the one instance (the caps are per instance)
    gpu_zonal_redundancy_disabled    = true # best-effort zonal capacity, the cheaper GPU rate
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = 0 # scale to zero: GPU billed only while an instance is up
      max_instance_count = var.max_instances
    }

    node_selector {
      accelerator = "nvidia-l4"
    }

    containers {
      image = var.runtime_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu              = tostring(var.runtime_cpu)
          memory           = "${var.runtime_memory_gib}Gi"
          "nvidia.com/gpu" = "1"
        }
        cpu_idle          = false # instance-based billing: required with a GPU
        startup_cpu_boost = true  # imports and Ray start are CPU-bound
      }

      env {
        name  = "AVATAR_PROFILE"
        value = "l4"
      }
      env {
        name  = "AVATAR_STORE__BUCKET"
        value = google_storage_bucket.assets.name
      }
      # Compilation at start (vLLM's CUDA graphs + torch.compile, LivePortrait's torch.compile) would add
      # tens of seconds to every cold start; see README "cold start".
      env {
        name  = "AVATAR_LLM__OPTIONS__ENFORCE_EAGER"
        value = var.fast_cold_start ? "true" : "false"
      }
      env {
        name  = "AVATAR_AVATAR__OPTIONS__COMPILE"
        value = var.fast_cold_start ? "false" : "true"
      }
      # TURN for the runtime's side of a call: Cloud Run takes no inbound UDP, so the runtime offers relayed
      # candidates only, with credentials it mints per call from the relay's secret (a JSON list of URLs).
      env {
        name  = "AVATAR_REALTIME__TURN__URLS"
        value = jsonencode(split(",", local.turn_urls))
      }
      env {
        name  = "AVATAR_REALTIME__ICE_TRANSPORT_POLICY"
        value = "relay"
      }
      env {
        name = "AVATAR_REALTIME__TURN__SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.turn_secret.secret_id
            version = "latest"
          }
        }
      }

      volume_mounts {
        name       = "dshm"
        mount_path = "/dev/shm"
      }

      # Traffic only once every stage answers (weights loaded); 48 x 5 s = 240 s, Cloud Run's limit.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 4
        failure_threshold     = 48
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    # Ray's object store (serve.object_store_mb of the l4 profile: 2048 MB) lives in /dev/shm; an
    # in-memory volume counts against the instance's memory.
    volumes {
      name = "dshm"
      empty_dir {
        medium     = "MEMORY"
        size_limit = "${var.shm_size_gib}Gi"
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.turn_secret,
    google_artifact_registry_repository_iam_member.run_agent_pulls,
  ]
}
