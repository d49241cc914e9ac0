# Terraform for one owner's deployment on Google Cloud (README "Deploy"). State holds the generated
# secrets (random_password): keep it in a private bucket (backend "gcs"), never in the repository.
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.30, < 8.0" # gpu_zonal_redundancy_disabled and node_selector on Cloud Run v2
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "google" {
  project               = var.project_id
  region                = var.region
  billing_project       = var.project_id
  user_project_override = true # the budget API bills its quota to this project
}
