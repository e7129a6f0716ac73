#!/usr/bin/env bash
# Create the test PKI the compose file mounts: a CA, the SuperLink certificate and the Home Authority certificate.
set -euo pipefail
out="${1:-certs}"
bastionfl deploy certs --out "$out/superlink" --san superlink --san localhost --ip 127.0.0.1
bastionfl deploy certs --out "$out/ha" --san ha --san localhost --ip 127.0.0.1
