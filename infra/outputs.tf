output "web_url" {
  description = "The web service (the page is at /avatar/)."
  value       = google_cloud_run_v2_service.web.uri
}

output "runtime_url" {
  description = "The GPU runtime (not public: call it with an ID token of an account holding run.invoker)."
  value       = google_cloud_run_v2_service.runtime.uri
}

output "image_repository" {
  description = "docker tag/push target: <this>/runtime:TAG and <this>/web:TAG."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "assets_bucket" {
  value = google_storage_bucket.assets.name
}

output "weights_bucket" {
  description = "Upload the fetched weights to gs://<this>/models (avatar models fetch ... --from reads that layout)."
  value       = google_storage_bucket.weights.name
}

output "turn_address" {
  value = google_compute_address.turn.address
}

output "reverse_proxy_nginx" {
  description = "For a site behind its own nginx: the /avatar location block."
  value       = <<-NGINX
    location = /avatar { return 301 /avatar/; }
    location /avatar/ {
        proxy_pass https://${local.web_host};
        proxy_set_header Host ${local.web_host};   # Cloud Run routes by host
        proxy_ssl_server_name on;
        proxy_http_version 1.1;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;    # the WebSocket fallback
        proxy_set_header Connection $http_connection;
        proxy_buffering off;                       # replies stream through as they are written
        proxy_read_timeout ${var.request_timeout_s}s;
    }
  NGINX
}

output "lb_path_rule" {
  description = "For a site behind a Google external Application LB: add this to its URL map's path matcher."
  value = var.site_behind_gcp_lb ? join("\n", [
    "path_rule {",
    "  paths   = [\"/avatar\", \"/avatar/*\"]",
    "  service = \"${google_compute_backend_service.web[0].id}\"",
    "}",
  ]) : "site_behind_gcp_lb is false: use reverse_proxy_nginx"
}
