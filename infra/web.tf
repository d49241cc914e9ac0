# The web service: the /avatar page and the signaling service (CPU, request-based billing, public).
locals {
  turn_urls = join(",", [
    "turn:${google_compute_address.turn.address}:3478?transport=udp",
    "turn:${google_compute_address.turn.address}:3478?transport=tcp",
  ])
}

resource "google_cloud_run_v2_service" "web" {
  name                = "${var.name}-web"
  location            = var.region
  # Behind the site's LB: only load balancers reach it; behind the site's own proxy: the proxy does.
  ingress = var.site_behind_gcp_lb ? "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER" : "INGRESS_TRAFFIC_ALL"
  deletion_protection = false
  labels              = local.labels

  template {
    service_account                  = google_service_account.web.email
    timeout                          = "${var.request_timeout_s}s" # a streamed reply or a call's socket
    max_instance_request_concurrency = 200

    # One instance: the signaling caps (sessions, rates) are per instance, in memory.
    scaling {
      min_instance_count = 0
      max_instance_count = 1
    }

    containers {
      image = var.web_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = true # request-based billing
      }

      env {
        name  = "SIGNALING_RUNTIME_URL"
        value = google_cloud_run_v2_service.runtime.uri
      }
      # Calls to the runtime carry a Google ID token of this service's account (signaling/gcp_auth.py).
      env {
        name  = "SIGNALING_RUNTIME_AUTH"
        value = "google-id-token"
      }
      env {
        name  = "SIGNALING_ALLOWED_ORIGINS"
        value = var.site_origin
      }
      env {
        name  = "SIGNALING_TRUSTED_PROXIES"
        value = tostring(var.trusted_proxies)
      }
      # The runtime's caps (avatar.yaml chat:), across every runtime instance.
      env {
        name  = "SIGNALING_MAX_SESSIONS"
        value = tostring(local.chat.max_sessions * var.max_instances)
      }
      env {
        name  = "SIGNALING_MAX_SESSION_MINUTES"
        value = tostring(local.chat.max_session_minutes)
      }
      env {
        name = "SIGNALING_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.session_key.secret_id
            version = "latest"
          }
        }
      }
      # TURN credentials for the browser, minted per conversation from the relay's secret.
      env {
        name  = "SIGNALING_TURN_URLS"
        value = local.turn_urls
      }
      env {
        name = "SIGNALING_TURN_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.turn_secret.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 2
        timeout_seconds   = 2
        failure_threshold = 15
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.web_session_key,
    google_secret_manager_secret_iam_member.turn_secret,
    google_artifact_registry_repository_iam_member.run_agent_pulls,
  ]
}

# The page is public: anyone may load /avatar (the signaling service rate-limits and caps sessions).
resource "google_cloud_run_v2_service_iam_member" "web_public" {
  # Public by design (checkov's CKV_GCP_102 covers only the v1 IAM resources; tests/test_deploy.py
  # checks that this service, and only this one, is public).
  name     = google_cloud_run_v2_service.web.name
  location = google_cloud_run_v2_service.web.location
  role     = "roles/run.invoker"
  member   = "allUsers"
}
