# One service account per workload, each with only what it uses.

resource "google_service_account" "runtime" {
  account_id   = "${var.name}-runtime"
  display_name = "Realtime Avatar GPU runtime (Cloud Run)"
}

resource "google_service_account" "web" {
  account_id   = "${var.name}-web"
  display_name = "Realtime Avatar web + signaling (Cloud Run)"
}

resource "google_service_account" "turn" {
  account_id   = "${var.name}-turn"
  display_name = "Realtime Avatar TURN relay (VM)"
}

# The runtime reads and writes the asset store (uploads, cached clips) and only reads the weights mirror.
resource "google_storage_bucket_iam_member" "runtime_assets" {
  bucket = google_storage_bucket.assets.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.runtime.email}"
}

resource "google_storage_bucket_iam_member" "runtime_weights" {
  bucket = google_storage_bucket.weights.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.runtime.email}"
}

# The web service may invoke the runtime and nothing else (no project-wide run.invoker).
resource "google_cloud_run_v2_service_iam_member" "web_invokes_runtime" {
  name     = google_cloud_run_v2_service.runtime.name
  location = google_cloud_run_v2_service.runtime.location
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.web.email}"
}

# Logs and metrics from all three.
resource "google_project_iam_member" "log_writer" {
  for_each = {
    runtime = google_service_account.runtime.email
    web     = google_service_account.web.email
    turn    = google_service_account.turn.email
  }
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${each.value}"
}

resource "google_project_iam_member" "metric_writer" {
  for_each = {
    runtime = google_service_account.runtime.email
    web     = google_service_account.web.email
    turn    = google_service_account.turn.email
  }
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${each.value}"
}

# The Cloud Run service agent pulls the images from this repository.
resource "google_artifact_registry_repository_iam_member" "run_agent_pulls" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:service-${data.google_project.this.number}@serverless-robot-prod.iam.gserviceaccount.com"
}
