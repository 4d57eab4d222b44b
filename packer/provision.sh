#!/usr/bin/env bash
# Provisions a gitlab-dr host: run as root by Packer on the AMI's build instance (see
# gitlab.pkr.hcl), or by the tests in a container.
#
# It installs the Docker engine and Compose from Debian's packages, pre-pulls the pinned GitLab
# image, builds the gitlab-rsync sidecar image, prepares the EBS data volume's first boot (it is
# then formatted btrfs if blank, mounted, and given its subvolumes; nothing is mounted here),
# raises the inotify watch limit, lets DOCKER_USER use the engine, and starts no container:
# GitLab is started later, by inv pair on the master and by promotion on the slave.
#
# Input, from the environment:
#   GITLAB_IMAGE              the pinned GitLab image (required)
#   STAGING_DIR               where Packer uploaded compose/, images/gitlab-rsync/, sidecar/
#                             (the sidecar's build context) and prepare-data-volume.sh
#   BASE_IMAGE, SYNC_IMAGE    base and tag of the gitlab-rsync image
#   DOCKER_USER               user added to the docker group (it must exist)
#   DATA_MOUNT, DATA_LABEL    mount point and filesystem label of the data volume
#   DATA_SUBVOLUMES           the btrfs subvolumes at its top: GITLAB_HOME's and SYNC_HOME's
#                             folder names, space-separated
#   INOTIFY_MAX_USER_WATCHES  fs.inotify.max_user_watches
#   PROJECT_NAME              recorded in /etc/gitlab-dr/image.env
# Steps that cannot work in a container are skipped, each with a line saying so:
#   PROVISION_SKIP_PULL=1     do not pull the GitLab image (no registry)
#   PROVISION_SKIP_BUILD=1    do not build the sidecar image (no engine, no registry)
#   without systemd (detected), the engine is neither enabled nor started.
set -euo pipefail

STAGING_DIR=${STAGING_DIR:-/tmp/gitlab-dr}
STACK_DIR=${STACK_DIR:-/opt/gitlab-dr/compose}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
SYNC_IMAGE=${SYNC_IMAGE:-gitlab-dr/gitlab-rsync:local}
DOCKER_USER=${DOCKER_USER:-admin}
DATA_MOUNT=${DATA_MOUNT:-/srv}
DATA_LABEL=${DATA_LABEL:-gitlab-data}
DATA_SUBVOLUMES=${DATA_SUBVOLUMES:-gitlab gitlab-sync}
INOTIFY_MAX_USER_WATCHES=${INOTIFY_MAX_USER_WATCHES:-1048576}
PROJECT_NAME=${PROJECT_NAME:-gitlab-dr}
PROVISION_SKIP_PULL=${PROVISION_SKIP_PULL:-0}
PROVISION_SKIP_BUILD=${PROVISION_SKIP_BUILD:-0}

log() { printf 'provision: %s\n' "$*"; }
skip() { printf 'provision: skipped: %s\n' "$*"; }
die() {
  printf 'provision: error: %s\n' "$*" >&2
  exit 1
}
has_systemd() { [ -d /run/systemd/system ]; }

# --- Check the input before changing anything -----------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (Packer runs it with sudo)"
[ -n "${GITLAB_IMAGE:-}" ] || die "GITLAB_IMAGE is not set (the pinned GitLab image)"
case $GITLAB_IMAGE in
  *:latest) die "GITLAB_IMAGE must be pinned, not :latest: $GITLAB_IMAGE" ;;
esac
case $DATA_MOUNT in
  /?*) ;;
  *) die "DATA_MOUNT must be an absolute path other than /: $DATA_MOUNT" ;;
esac
[[ $INOTIFY_MAX_USER_WATCHES =~ ^[0-9]+$ ]] || die "INOTIFY_MAX_USER_WATCHES must be a number"
[[ $DATA_SUBVOLUMES =~ ^[A-Za-z0-9_][A-Za-z0-9._-]*( [A-Za-z0-9_][A-Za-z0-9._-]*)*$ ]] ||
  die "DATA_SUBVOLUMES must be folder names separated by spaces: $DATA_SUBVOLUMES"
id "$DOCKER_USER" >/dev/null 2>&1 || die "user $DOCKER_USER does not exist (the SSH user of the hosts)"
[ -f "$STAGING_DIR/compose/docker-compose.yml" ] || die "$STAGING_DIR/compose/docker-compose.yml is missing"
[ -f "$STAGING_DIR/prepare-data-volume.sh" ] || die "$STAGING_DIR/prepare-data-volume.sh is missing"
for part in images/gitlab-rsync/Dockerfile sidecar/gitlab_sync/__main__.py ops/dr/verify_schedule.py; do
  [ -f "$STAGING_DIR/$part" ] || die "$STAGING_DIR/$part is missing (the sidecar's build context)"
done

# --- Packages: the engine, Compose, and what the data volume's first boot needs -------------
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# On a fresh instance, cloud-init may still be configuring the system (and holding apt).
if command -v cloud-init >/dev/null 2>&1; then
  log "waiting for cloud-init to finish"
  cloud-init status --wait >/dev/null || true
fi

# Packages start no service while they install; this script starts what it needs itself.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

log "updating the package lists and upgrading the base system"
apt-get update -q -o DPkg::Lock::Timeout=300
apt-get upgrade "${apt_opts[@]}"

# Compose: Docker's plugin package where a repository offers it, else Debian's docker-compose
# (bookworm: Compose 1.29, the docker-compose command; trixie and later: the Compose v2 plugin).
compose_pkg=docker-compose
if apt-cache show docker-compose-plugin >/dev/null 2>&1; then
  compose_pkg=docker-compose-plugin
fi
packages=(docker.io "$compose_pkg" apparmor ca-certificates pigz xz-utils btrfs-progs e2fsprogs util-linux procps)
log "installing ${packages[*]}"
apt-get install "${apt_opts[@]}" --no-install-recommends "${packages[@]}"
apt-get clean

if docker compose version >/dev/null 2>&1; then
  log "compose: $(docker compose version)"
elif command -v docker-compose >/dev/null 2>&1; then
  log "compose: $(docker-compose version --short 2>/dev/null || echo unknown) (the docker-compose command)"
else
  die "neither 'docker compose' nor 'docker-compose' works after installing $compose_pkg"
fi

# --- The engine's configuration ------------------------------------------------------------
# Bounded logs, and containers that survive a restart of the engine (a package upgrade).
install -d -m 0755 /etc/docker
cat >/etc/docker/daemon.json <<'EOF'
{
  "live-restore": true,
  "log-driver": "json-file",
  "log-opts": { "max-size": "50m", "max-file": "5" }
}
EOF

if has_systemd; then
  log "enabling and starting the Docker engine"
  systemctl daemon-reload
  systemctl enable containerd.service docker.service
  systemctl restart docker.service
else
  skip "enabling and starting the Docker engine (no systemd here)"
fi

log "adding $DOCKER_USER to the docker group"
usermod -aG docker "$DOCKER_USER"

# --- The Compose stack and the images ------------------------------------------------------
# The stack's folder holds compose/ and, beside it, the sidecar's build context (its Dockerfile
# in images/gitlab-rsync, its code in sidecar/ and, for gitlab-verify, ops/): the Compose file
# builds from "..".
APP_DIR=$(dirname "$STACK_DIR")
log "installing the Compose stack in $STACK_DIR and the sidecar's build context in $APP_DIR"
rm -rf "$STACK_DIR" "$APP_DIR/images" "$APP_DIR/sidecar" "$APP_DIR/ops"
install -d -m 0755 "$APP_DIR" "$APP_DIR/images"
cp -R "$STAGING_DIR/compose" "$STACK_DIR"
cp -R "$STAGING_DIR/images/gitlab-rsync" "$APP_DIR/images/gitlab-rsync"
cp -R "$STAGING_DIR/sidecar" "$APP_DIR/sidecar"
cp -R "$STAGING_DIR/ops" "$APP_DIR/ops"
for dir in "$STACK_DIR" "$APP_DIR/images" "$APP_DIR/sidecar" "$APP_DIR/ops"; do
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$dir"
  chmod -R u=rwX,go=rX "$dir"
done

engine_up() { docker info >/dev/null 2>&1; }
need_engine() {
  engine_up || die "the Docker engine is not running, so $1 cannot be done (in a container: set PROVISION_SKIP_PULL=1 PROVISION_SKIP_BUILD=1)"
}

if [ "$PROVISION_SKIP_PULL" = 1 ]; then
  skip "pulling $GITLAB_IMAGE (PROVISION_SKIP_PULL=1)"
else
  need_engine "pulling $GITLAB_IMAGE"
  log "pulling $GITLAB_IMAGE"
  docker pull --quiet "$GITLAB_IMAGE"
fi

if [ "$PROVISION_SKIP_BUILD" = 1 ]; then
  skip "building $SYNC_IMAGE (PROVISION_SKIP_BUILD=1)"
else
  need_engine "building $SYNC_IMAGE"
  log "building $SYNC_IMAGE from $BASE_IMAGE"
  docker build --quiet --pull --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$SYNC_IMAGE" \
    -f "$APP_DIR/images/gitlab-rsync/Dockerfile" "$APP_DIR"
fi

# --- Kernel settings -----------------------------------------------------------------------
sysctl_file=/etc/sysctl.d/60-gitlab-dr.conf
log "setting fs.inotify.max_user_watches=$INOTIFY_MAX_USER_WATCHES in $sysctl_file"
cat >"$sysctl_file" <<EOF
# gitlab-dr: the master's gitlab-rsync sidecar watches every folder of GitLab's data.
fs.inotify.max_user_watches = $INOTIFY_MAX_USER_WATCHES
EOF
if ! sysctl -q -p "$sysctl_file" >/dev/null 2>&1; then
  skip "applying $sysctl_file now (read-only /proc/sys here); it applies at boot"
fi

# --- The data volume: made ready and mounted at boot, nothing mounted now -----------------
# Written after the images are in, because from here on the engine requires the data volume.
# At every boot gitlab-dr-data.service formats it btrfs if it is blank (an ext4 volume is kept
# as it is: the sync's fallback), points fstab at its UUID, mounts it, and makes the subvolumes.
log "preparing $DATA_MOUNT for the data volume labelled $DATA_LABEL (btrfs: $DATA_SUBVOLUMES)"
install -d -m 0755 "$DATA_MOUNT"
install -m 0755 "$STAGING_DIR/prepare-data-volume.sh" /usr/local/sbin/gitlab-dr-prepare-data-volume
cat >/etc/default/gitlab-dr-data <<EOF
# gitlab-dr: the EBS data volume (read by gitlab-dr-prepare-data-volume at boot).
DATA_LABEL=$DATA_LABEL
# Where it is mounted, and the btrfs subvolumes at its top (GITLAB_HOME, SYNC_HOME).
DATA_MOUNT=$DATA_MOUNT
DATA_SUBVOLUMES="$DATA_SUBVOLUMES"
# The data volume's device; empty: the one blank EBS disk, if there is exactly one.
DATA_DEVICE=
# How long to wait at boot for the volume to be attached (inv launch attaches it once the
# instance runs). The boot does not wait; the Docker engine does.
WAIT_SECONDS=600
EOF

install -d -m 0755 /etc/systemd/system
cat >/etc/systemd/system/gitlab-dr-data.service <<'EOF'
[Unit]
Description=gitlab-dr: the EBS data volume, formatted btrfs if blank, mounted, its subvolumes made
Documentation=file:///opt/gitlab-dr/compose/docker-compose.yml
DefaultDependencies=no
Wants=systemd-udev-trigger.service
After=systemd-udev-trigger.service systemd-remount-fs.service
Before=shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=660
ExecStart=/usr/local/sbin/gitlab-dr-prepare-data-volume
EOF

# One entry for DATA_MOUNT, under a comment line; a previous entry for it is replaced. This one,
# by label, is the first boot's: gitlab-dr-data.service replaces it with the volume's UUID.
fstab_mark="# gitlab-dr: the EBS data volume, formatted on first boot by gitlab-dr-data.service"
touch /etc/fstab
awk -v mark="$fstab_mark" -v mnt="$DATA_MOUNT" '$0 != mark && !($1 !~ /^#/ && $2 == mnt)' \
  /etc/fstab >/etc/fstab.gitlab-dr
printf '%s\nLABEL=%s %s btrfs user_subvol_rm_allowed,noatime,nofail,x-systemd.requires=gitlab-dr-data.service,x-systemd.device-timeout=12min 0 0\n' \
  "$fstab_mark" "$DATA_LABEL" "$DATA_MOUNT" >>/etc/fstab.gitlab-dr
chmod 0644 /etc/fstab.gitlab-dr
mv /etc/fstab.gitlab-dr /etc/fstab

# The engine starts only once the data volume is mounted: a GitLab started on the bare root
# disk would come up empty, and a master's sidecar would then send that emptiness to the slave.
install -d -m 0755 /etc/systemd/system/docker.service.d
cat >/etc/systemd/system/docker.service.d/10-gitlab-dr-data.conf <<EOF
[Unit]
RequiresMountsFor=$DATA_MOUNT
EOF

# --- What this image holds, for preflight checks -------------------------------------------
install -d -m 0755 /etc/gitlab-dr
cat >/etc/gitlab-dr/image.env <<EOF
PROJECT_NAME=$PROJECT_NAME
GITLAB_IMAGE=$GITLAB_IMAGE
SYNC_IMAGE=$SYNC_IMAGE
BASE_IMAGE=$BASE_IMAGE
DATA_MOUNT=$DATA_MOUNT
DATA_LABEL=$DATA_LABEL
DATA_SUBVOLUMES="$DATA_SUBVOLUMES"
STACK_DIR=$STACK_DIR
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

# --- GitLab must not run in the image ------------------------------------------------------
if engine_up; then
  running=$(docker ps --all --quiet)
  [ -z "$running" ] || die "containers exist on the build host; the image must start none: $running"
  log "no container exists: GitLab is not started"
else
  log "no Docker engine running: GitLab is not started"
fi

rm -rf "$STAGING_DIR"
log "done: $GITLAB_IMAGE and $SYNC_IMAGE, data volume $DATA_LABEL at $DATA_MOUNT"
