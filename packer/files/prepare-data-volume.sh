#!/usr/bin/env bash
# gitlab-dr-prepare-data-volume: run at boot by gitlab-dr-data.service, before the data volume
# is mounted by label (see /etc/fstab). It makes sure a filesystem labelled DATA_LABEL exists:
#   - a filesystem with that label is already there: nothing to do (every boot but the first);
#   - DATA_DEVICE is set: that device is formatted if it carries no signature at all, and
#     left alone (an error) if it carries anything else;
#   - otherwise: the one EBS disk that is not the root disk, has no partition and carries no
#     signature is formatted. None yet: wait up to WAIT_SECONDS for it to be attached. Several:
#     refuse, and ask for DATA_DEVICE.
# It never formats a disk that holds any filesystem, partition table or RAID signature.
set -euo pipefail

conf=${GITLAB_DR_DATA_CONF:-/etc/default/gitlab-dr-data}
if [ -r "$conf" ]; then
  # shellcheck source=/dev/null
  . "$conf"
fi
DATA_LABEL=${DATA_LABEL:-gitlab-data}
DATA_DEVICE=${DATA_DEVICE:-}
WAIT_SECONDS=${WAIT_SECONDS:-600}

log() { printf 'gitlab-dr-data: %s\n' "$*"; }

labelled() { blkid -L "$DATA_LABEL" >/dev/null 2>&1; }

# blkid -p exits 2 when it finds no signature of any kind on the device.
blank() {
  local rc=0
  blkid -p "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 2 ]
}

root_disk() {
  local source
  source=$(findmnt -no SOURCE /)
  lsblk -no PKNAME "$source" 2>/dev/null | head -n1 || true
}

# Whole disks that could be the data volume: not the root disk, no partitions, not instance
# storage (ephemeral NVMe disks are blank too, and lost at every stop), no signature.
candidates() {
  local root name type model
  root=$(root_disk)
  while read -r name type model; do
    [ "$type" = disk ] || continue
    [ "${name##*/}" != "$root" ] || continue
    case $model in *"Instance Storage"*) continue ;; esac
    [ "$(lsblk -nro NAME "$name" | wc -l)" -eq 1 ] || continue
    if blank "$name"; then printf '%s\n' "$name"; fi
  done < <(lsblk -dnpo NAME,TYPE,MODEL)
}

format() {
  log "formatting $1 as ext4 labelled $DATA_LABEL"
  mkfs.ext4 -q -L "$DATA_LABEL" -m 1 "$1"
  udevadm settle || true
}

deadline=$((SECONDS + WAIT_SECONDS))
while :; do
  if labelled; then
    log "the data volume labelled $DATA_LABEL is there"
    exit 0
  fi
  if [ -n "$DATA_DEVICE" ]; then
    if [ -b "$DATA_DEVICE" ]; then
      if blank "$DATA_DEVICE"; then
        format "$DATA_DEVICE"
        exit 0
      fi
      log "$DATA_DEVICE holds something that is not labelled $DATA_LABEL; not touching it"
      exit 1
    fi
  else
    mapfile -t found < <(candidates)
    if [ "${#found[@]}" -eq 1 ]; then
      format "${found[0]}"
      exit 0
    fi
    if [ "${#found[@]}" -gt 1 ]; then
      log "several blank disks (${found[*]}); set DATA_DEVICE in $conf"
      exit 1
    fi
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "no data volume after ${WAIT_SECONDS}s (label $DATA_LABEL${DATA_DEVICE:+, device $DATA_DEVICE})"
    exit 1
  fi
  sleep 2
done
