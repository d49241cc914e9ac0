# Secrets live in Secret Manager only: generated here (so they sit in Terraform state, which must be a
# private backend), handed to the services as secret references, never as plain variables or env values.

resource "random_password" "session_key" {
  length  = 48
  special = false
}

resource "random_password" "turn_secret" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret" "session_key" {
  secret_id = "${var.name}-session-signing-key"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "session_key" {
  secret      = google_secret_manager_secret.session_key.id
  secret_data = random_password.session_key.result
}

resource "google_secret_manager_secret" "turn_secret" {
  secret_id = "${var.name}-turn-secret"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "turn_secret" {
  secret      = google_secret_manager_secret.turn_secret.id
  secret_data = random_password.turn_secret.result
}

# Who reads which secret: the web service both (it signs session tokens and issues TURN credentials), the
# runtime and the TURN VM only the TURN secret.
resource "google_secret_manager_secret_iam_member" "web_session_key" {
  secret_id = google_secret_manager_secret.session_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.web.email}"
}

resource "google_secret_manager_secret_iam_member" "turn_secret" {
  for_each = {
    web     = google_service_account.web.email
    runtime = google_service_account.runtime.email
    turn    = google_service_account.turn.email
  }
  secret_id = google_secret_manager_secret.turn_secret.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value}"
}
