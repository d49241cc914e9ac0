# The TURN relay: Debian's coturn on a small VM with a static IP. Cloud Run takes no inbound UDP, so every
# call's media is relayed here (browser <-> coturn <-> runtime). Only coturn's ports are open; no SSH rule.

resource "google_compute_network" "turn" {
  name                    = "${var.name}-turn"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

resource "google_compute_subnetwork" "turn" {
  #checkov:skip=CKV_GCP_26:VPC flow logs of a subnet holding one relay VM would log every media packet's flow at a cost; coturn logs each allocation itself.
  name                     = "${var.name}-turn"
  region                   = var.region
  network                  = google_compute_network.turn.id
  ip_cidr_range            = "10.42.0.0/28"
  private_ip_google_access = true
}

resource "google_compute_address" "turn" {
  name         = "${var.name}-turn"
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
  depends_on   = [google_project_service.apis]
}

# coturn's listener (UDP and TCP 3478) and its relay range (infra/coturn/turnserver.conf min-port..max-port).
resource "google_compute_firewall" "turn" {
  name          = "${var.name}-turn"
  network       = google_compute_network.turn.id
  direction     = "INGRESS"
  source_ranges = ["0.0.0.0/0"] # browsers anywhere, and Cloud Run's egress
  target_tags   = ["${var.name}-turn"]

  allow {
    protocol = "udp"
    ports    = ["3478", "49160-49400"]
  }
  allow {
    protocol = "tcp"
    ports    = ["3478"]
  }
}

resource "google_compute_instance" "turn" {
  #checkov:skip=CKV_GCP_40:A TURN relay must have a public address: browsers and the Cloud Run runtime reach it from the internet.
  #checkov:skip=CKV_GCP_38:The boot disk holds Debian and coturn's config only; Google-managed encryption applies, a customer-supplied key would have to be handed to every restart.
  name                      = "${var.name}-turn"
  machine_type              = var.turn_machine_type
  zone                      = var.zone
  tags                      = ["${var.name}-turn"]
  labels                    = local.labels
  can_ip_forward            = false
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = 10
      type  = "pd-standard"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.turn.id
    access_config {
      nat_ip       = google_compute_address.turn.address
      network_tier = "PREMIUM"
    }
  }

  service_account {
    email  = google_service_account.turn.email
    scopes = ["cloud-platform"] # what it may do is its account's roles: read the TURN secret, write logs
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "false"
    startup-script = templatefile("${path.module}/turn-startup.sh.tftpl", {
      base_config = file("${path.module}/coturn/turnserver.conf")
      external_ip = google_compute_address.turn.address
      project     = var.project_id
      secret_id   = google_secret_manager_secret.turn_secret.secret_id
      realm       = "${var.name}.turn"
    })
  }

  depends_on = [google_secret_manager_secret_iam_member.turn_secret, google_secret_manager_secret_version.turn_secret]
}
