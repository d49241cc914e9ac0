# How https://SITE/avatar reaches the web service. Two ways (README "Deploy", step 6):
#  - the site's own reverse proxy (default, nothing to provision, no load balancer bill): forward /avatar/
#    to the web service's run.app URL; the `reverse_proxy_nginx` output is the exact block;
#  - the site already sits behind a Google external Application Load Balancer (site_behind_gcp_lb = true):
#    this file provisions a serverless NEG + backend service for the web service, and the web service
#    then accepts traffic from load balancers only; add the `lb_path_rule` output to the site's URL map.

resource "google_compute_region_network_endpoint_group" "web" {
  count                 = var.site_behind_gcp_lb ? 1 : 0
  name                  = "${var.name}-web"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloud_run_v2_service.web.name
  }
}

resource "google_compute_backend_service" "web" {
  count                 = var.site_behind_gcp_lb ? 1 : 0
  name                  = "${var.name}-web"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  backend {
    group = google_compute_region_network_endpoint_group.web[0].id
  }
  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

locals {
  web_host = trimprefix(google_cloud_run_v2_service.web.uri, "https://")
}
