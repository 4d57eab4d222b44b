#!/usr/bin/env bash
# Installs the host tools the build and the tests use, from Debian's packages, when missing.
# Needs root (or sudo) the first time; does nothing when every tool is already there.
set -euo pipefail

declare -A need=(
  [mmdebstrap]=mmdebstrap    # base image when no registry is reachable
  [ssh]=openssh-client       # the Docker SDK's ssh:// transport
  [sshd]=openssh-server      # a local sshd in front of the Docker engine, for tests
  [shellcheck]=shellcheck    # every shell script is checked
  [packer]=packer            # packer fmt -check on the AMI template
  [rsync]=rsync              # benchmarks compare against a bare rsync
  [docker-compose]=docker-compose  # ops deploys the stack to each host with it
  [prometheus]=prometheus    # the sandbox's Prometheus; promtool checks the alert rules
  [promtool]=prometheus
  [mkfs.btrfs]=btrfs-progs   # the sandbox's and the tests' btrfs filesystems in loop files
  [btrfs]=btrfs-progs        # (loop devices and mount: util-linux, always there)
  [skopeo]=skopeo            # the drill pushes and pulls images through the Elastic IP
)
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${need[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "host-deps: install these packages yourself: ${missing[*]}" >&2
  exit 1
fi
echo "host-deps: installing ${missing[*]}" >&2
$sudo apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
