# DEMO ONLY (dev mode, see kustomization.yaml). Added to `bao server -dev`, which keeps its own plain-HTTP
# listener on 127.0.0.1:8210 inside the pod (for `kubectl exec ... bao`); everything from outside the pod
# reaches the TLS listener below.
ui = false

# The address clients are told to use (the Service).
api_addr = "https://vault.vault.svc:8200"

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "127.0.0.1:8201"
  tls_cert_file   = "/openbao/tls/tls.crt"
  tls_key_file    = "/openbao/tls/tls.key"
  tls_min_version = "tls12"
}

# OpenBao 2.x takes audit devices from the config file only. One JSON line per request and response;
# the e2e suite reads it with: kubectl -n vault exec deploy/vault -- cat /openbao/audit/audit.log
audit "file" "file" {
  options {
    file_path = "/openbao/audit/audit.log"
  }
}
