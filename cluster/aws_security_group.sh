#!/usr/bin/env bash
# Creates the security group that cluster/aws.yaml's nodes use:
#   * all traffic between members of the group (Ray's GCS, raylets, object
#     transfer, NCCL between GPU workers, NFS to EFS mount targets in the group);
#   * SSH (22/tcp) from ONE admin CIDR, for `ray up/attach/dashboard`;
#   * nothing else: no Ray port is reachable from outside the group.
#
#   cluster/aws_security_group.sh --vpc-id vpc-... --admin-cidr 203.0.113.7/32 \
#       [--region us-west-2] [--name cmcl-ray]
#
# Prints the new group id: put it in every SecurityGroupIds of aws.yaml and on
# the EFS mount targets. Ray's own auto-created group always adds SSH from
# 0.0.0.0/0, which is why aws.yaml does not let Ray create one.
set -euo pipefail

REGION=us-west-2
NAME=cmcl-ray
VPC_ID=""
ADMIN_CIDR=""

die() {
    echo "aws_security_group.sh: $*" >&2
    exit 2
}

while (($#)); do
    case "$1" in
    --vpc-id) VPC_ID="${2:-}"; shift 2 ;;
    --admin-cidr) ADMIN_CIDR="${2:-}"; shift 2 ;;
    --region) REGION="${2:-}"; shift 2 ;;
    --name) NAME="${2:-}"; shift 2 ;;
    *) die "unknown option '$1' (valid: --vpc-id, --admin-cidr, --region, --name)" ;;
    esac
done

[[ "$VPC_ID" =~ ^vpc-[0-9a-f]+$ ]] || die "--vpc-id must look like vpc-0123abcd, got '$VPC_ID'"
# One IPv4 host or network you administer from; never the whole internet.
[[ "$ADMIN_CIDR" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$ ]] ||
    die "--admin-cidr must be an IPv4 CIDR such as 203.0.113.7/32, got '$ADMIN_CIDR'"
[[ "${ADMIN_CIDR#*/}" -ge 8 && "${ADMIN_CIDR%%.*}" != 0 ]] ||
    die "--admin-cidr $ADMIN_CIDR is too broad: SSH must be limited to your own address range (prefix /8 or longer, not 0.0.0.0)"

group_id="$(aws ec2 create-security-group --region "$REGION" --vpc-id "$VPC_ID" \
    --group-name "$NAME" --description "cmcl Ray cluster: intra-group traffic, SSH from admin CIDR" \
    --query GroupId --output text)"

aws ec2 authorize-security-group-ingress --region "$REGION" --group-id "$group_id" \
    --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$group_id,Description=cmcl-ray-intra-cluster}]" \
    >/dev/null
aws ec2 authorize-security-group-ingress --region "$REGION" --group-id "$group_id" \
    --ip-permissions "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$ADMIN_CIDR,Description=cmcl-ray-admin-ssh}]" \
    >/dev/null

echo "$group_id"
