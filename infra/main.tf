locals {
  # The same config the runtime reads: the signaling service's caps are the runtime's chat caps
  # (realtime_avatar/avatar.yaml, `chat:`), so the page and the runtime end a session at the same time.
  avatar         = yamldecode(file("${path.module}/../realtime_avatar/avatar.yaml"))
  chat           = local.avatar.defaults.chat
  assets_bucket  = var.assets_bucket != "" ? var.assets_bucket : "${var.project_id}-${var.name}-assets"
  weights_bucket = var.weights_bucket != "" ? var.weights_bucket : "${var.project_id}-${var.name}-weights"
  labels         = { app = "realtime-avatar" }
}

data "google_project" "this" {}

resource "google_project_service" "apis" {
  for_each = toset([
    "run.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "storage.googleapis.com",
    "billingbudgets.googleapis.com",
    "monitoring.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# Docker images: the runtime (weights baked in, ~18 GB) and the web service. Only the newest two of each
# are kept, so storage stays at ~2 x 18 GB (avatar cost counts it).
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; the images hold this public code and publicly released weights, and a KMS key would add a key to manage and pay for.
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "Realtime Avatar images"
  labels        = local.labels

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-newest-two"
    action = "KEEP"
    most_recent_versions {
      keep_count = 2
    }
  }
  cleanup_policies {
    id     = "delete-older"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "604800s"
    }
  }
  depends_on = [google_project_service.apis]
}

# Prepared portraits and voices (by content id) and cached greeting clips (store.bucket, store.prefix).
resource "google_storage_bucket" "assets" {
  #checkov:skip=CKV_GCP_62:Access logs would need a second bucket and cost; Cloud Audit Logs record admin access, and the objects are the owner's own portrait, voice and clips.
  name                        = local.assets_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }
  # Cached clips are regenerated on demand: the local cache keeps them 7 days (clip_cache.ttl_s), the
  # bucket 30. Overwritten or deleted objects of any kind are gone after 7 days.
  lifecycle_rule {
    condition {
      age            = 30
      matches_prefix = ["${local.avatar.defaults.store.prefix}/clips/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.apis]
}

# The production weights, in the layout `avatar models fetch --from gs://BUCKET/models` reads. The image
# build copies them into the image (README "cold start"); the bucket is the owner's mirror.
resource "google_storage_bucket" "weights" {
  #checkov:skip=CKV_GCP_62:Access logs would need a second bucket and cost; the objects are public model weights mirrored for the build.
  name                        = local.weights_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.apis]
}
