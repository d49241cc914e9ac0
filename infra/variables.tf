variable "project_id" {
  description = "The GCP project (an empty one is fine: the APIs are enabled here)."
  type        = string
}

variable "region" {
  description = "Cloud Run region with L4 GPUs and GPU zonal redundancy off (e.g. europe-west1, europe-west4, us-central1)."
  type        = string
  default     = "europe-west1"
}

variable "zone" {
  description = "Zone of the TURN VM, in var.region."
  type        = string
  default     = "europe-west1-b"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "avatar"
}

variable "assets_bucket" {
  description = "GCS bucket for prepared portraits, voices and cached clips (globally unique). Default: <project>-avatar-assets."
  type        = string
  default     = ""
}

variable "weights_bucket" {
  description = "GCS bucket mirroring the production weights (`avatar models fetch ... --from gs://...`). Default: <project>-avatar-weights."
  type        = string
  default     = ""
}

variable "site_origin" {
  description = "The owner's site, scheme://host, where /avatar lives (CORS origin of the page's API)."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/]+$", var.site_origin))
    error_message = "site_origin is an origin: https://example.com, no path and no trailing slash."
  }
}

variable "runtime_image" {
  description = "The runtime image (Dockerfile, target l4) in the Artifact Registry repository, by digest or tag."
  type        = string
}

variable "web_image" {
  description = "The web image (Dockerfile.web)."
  type        = string
}

variable "runtime_cpu" {
  description = "vCPUs of the runtime instance (Cloud Run requires >= 4 with an L4). Keep equal to cost.instance.vcpu."
  type        = number
  default     = 4

  validation {
    condition     = var.runtime_cpu >= 4 && var.runtime_cpu <= 8
    error_message = "An L4 instance has 4 to 8 vCPUs."
  }
}

variable "runtime_memory_gib" {
  description = "Memory of the runtime instance, GiB (>= 16 with an L4). Keep equal to cost.instance.memory_gib."
  type        = number
  default     = 16

  validation {
    condition     = var.runtime_memory_gib >= 16 && var.runtime_memory_gib <= 32
    error_message = "An L4 instance has 16 to 32 GiB."
  }
}

variable "shm_size_gib" {
  description = "The /dev/shm memory volume (Ray's object store, serve.object_store_mb of the l4 profile, must fit)."
  type        = number
  default     = 3
}

variable "max_instances" {
  description = "Most runtime instances (each one L4, billed whole while up). Keep equal to cost.instance.max_instances."
  type        = number
  default     = 1
}

variable "request_timeout_s" {
  description = "Cloud Run request timeout of the runtime: long enough for a whole call (Cloud Run allows up to 3600)."
  type        = number
  default     = 3600
}

variable "trusted_proxies" {
  description = "Proxies that append to X-Forwarded-For in front of the web service: the site's proxy or LB, then Cloud Run's front end."
  type        = number
  default     = 2
}

variable "billing_account" {
  description = "Billing account id (XXXXXX-XXXXXX-XXXXXX) for the budget."
  type        = string
}

variable "monthly_budget_usd" {
  description = "Budget alerts at 50/90/100% of this (keep equal to cost.monthly_budget_usd)."
  type        = number
  default     = 100
}

variable "alert_email" {
  description = "Where budget alerts go (besides the billing account's admins)."
  type        = string
}

variable "site_behind_gcp_lb" {
  description = "true: the site already has a Google external Application Load Balancer; create a serverless NEG + backend for its /avatar path rule. false: the site's own reverse proxy forwards /avatar (see the reverse_proxy_nginx output)."
  type        = bool
  default     = false
}

variable "turn_machine_type" {
  description = "The TURN VM (coturn relays a few Mbit/s; e2-micro is enough for a handful of calls)."
  type        = string
  default     = "e2-micro"
}

variable "fast_cold_start" {
  description = "Keep compilation off the cold path (vLLM enforce_eager, LivePortrait without torch.compile): the cold start meets ~45 s on paper, steady-state decoding and rendering are somewhat slower (README: cold start)."
  type        = bool
  default     = true
}
