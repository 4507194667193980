#!/usr/bin/env bash
# Creates the network that cluster/gcp.yaml's nodes use: a custom-mode VPC
# "cmcl-ray" (GCP denies all ingress there unless a rule allows it), one subnet,
# and two ingress rules for instances tagged cmcl-ray:
#   * all traffic from other cmcl-ray instances (Ray's GCS, raylets, object
#     transfer, NCCL between GPU workers);
#   * SSH (22/tcp) from ONE admin CIDR, for `ray up/attach/dashboard`.
# No Ray port is reachable from outside the cluster.
#
#   cluster/gcp_firewall.sh --project PROJECT --admin-cidr 203.0.113.7/32 \
#       [--region us-central1] [--range 10.42.0.0/20]
#
# Ray does not manage GCP firewalls; without this it would put nodes on the
# "default" network, whose stock rules allow SSH from 0.0.0.0/0.
set -euo pipefail

REGION=us-central1
RANGE=10.42.0.0/20
PROJECT=""
ADMIN_CIDR=""
NAME=cmcl-ray

die() {
    echo "gcp_firewall.sh: $*" >&2
    exit 2
}

while (($#)); do
    case "$1" in
    --project) PROJECT="${2:-}"; shift 2 ;;
    --admin-cidr) ADMIN_CIDR="${2:-}"; shift 2 ;;
    --region) REGION="${2:-}"; shift 2 ;;
    --range) RANGE="${2:-}"; shift 2 ;;
    *) die "unknown option '$1' (valid: --project, --admin-cidr, --region, --range)" ;;
    esac
done

[[ "$PROJECT" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project must be a GCP project id, got '$PROJECT'"
# One IPv4 host or network you administer from; never the whole internet.
[[ "$ADMIN_CIDR" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]] ||
    die "--admin-cidr must be an IPv4 CIDR such as 203.0.113.7/32, got '$ADMIN_CIDR'"
[[ "${ADMIN_CIDR#*/}" -ge 8 && "${ADMIN_CIDR%%.*}" != 0 ]] ||
    die "--admin-cidr $ADMIN_CIDR is too broad: SSH must be limited to your own address range (prefix /8 or longer, not 0.0.0.0)"

gcloud compute networks create "$NAME" --project "$PROJECT" --subnet-mode custom
gcloud compute networks subnets create "$NAME" --project "$PROJECT" --network "$NAME" \
    --region "$REGION" --range "$RANGE"
gcloud compute firewall-rules create "$NAME-intra-cluster" --project "$PROJECT" \
    --network "$NAME" --direction INGRESS --action ALLOW --rules tcp,udp,icmp \
    --source-tags "$NAME" --target-tags "$NAME"
gcloud compute firewall-rules create "$NAME-admin-ssh" --project "$PROJECT" \
    --network "$NAME" --direction INGRESS --action ALLOW --rules tcp:22 \
    --source-ranges "$ADMIN_CIDR" --target-tags "$NAME"
