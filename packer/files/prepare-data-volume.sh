#!/usr/bin/env bash
# gitlab-dr-prepare-data-volume: run at every boot by gitlab-dr-data.service, before the data
# volume's mount unit (see /etc/fstab). It makes the EBS data volume ready and mounts it:
#   1. A filesystem labelled DATA_LABEL is there, or is made, btrfs:
#      - DATA_DEVICE is set: that device is formatted if it carries no signature at all, and
#        left alone (an error) if it carries anything else;
#      - otherwise: the one EBS disk that is not the root disk, has no partition and carries no
#        signature is formatted. None yet: wait up to WAIT_SECONDS for it to be attached.
#        Several: refuse, and ask for DATA_DEVICE.
#      It never formats a disk that holds any filesystem, partition table or RAID signature.
#   2. FSTAB mounts it at DATA_MOUNT by UUID, nofail: btrfs with user_subvol_rm_allowed (so
#      that the sidecar, which has no CAP_SYS_ADMIN, can delete the snapshots it made) and
#      noatime. Any other filesystem (an ext4 volume of an earlier AMI) is left as it is and
#      mounted with noatime: the sync then takes its fallback, without snapshots.
#   3. It is mounted there, as FSTAB says, and on btrfs each of DATA_SUBVOLUMES (GITLAB_HOME
#      and SYNC_HOME, the same on both hosts: roles swap) is a subvolume at its top.
# Whatever is already so is left, so every boot but the first changes nothing.
set -euo pipefail

conf=${GITLAB_DR_DATA_CONF:-/etc/default/gitlab-dr-data}
if [ -r "$conf" ]; then
  # shellcheck source=/dev/null
  . "$conf"
fi
DATA_LABEL=${DATA_LABEL:-gitlab-data}
DATA_DEVICE=${DATA_DEVICE:-}
DATA_MOUNT=${DATA_MOUNT:-/srv}
DATA_SUBVOLUMES=${DATA_SUBVOLUMES:-gitlab gitlab-sync}
WAIT_SECONDS=${WAIT_SECONDS:-600}
FSTAB=${FSTAB:-/etc/fstab}

# The same comment line provision.sh writes above the first boot's entry.
FSTAB_MARK="# gitlab-dr: the EBS data volume, formatted on first boot by gitlab-dr-data.service"
MOUNT_OPTIONS="nofail,x-systemd.requires=gitlab-dr-data.service,x-systemd.device-timeout=12min"

log() { printf 'gitlab-dr-data: %s\n' "$*"; }
die() {
  log "$*"
  exit 1
}

settle() {
  if command -v udevadm >/dev/null 2>&1; then udevadm settle || true; fi
}

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
  log "formatting $1 as btrfs labelled $DATA_LABEL"
  mkfs.btrfs -q -L "$DATA_LABEL" "$1" >/dev/null
  settle
}

# Sets device: the data volume's, formatted first if it is blank and the one to take.
find_volume() {
  local found deadline=$((SECONDS + WAIT_SECONDS))
  while :; do
    if device=$(blkid -L "$DATA_LABEL" 2>/dev/null); then
      log "the data volume labelled $DATA_LABEL is there ($device)"
      return
    fi
    if [ -n "$DATA_DEVICE" ]; then
      if [ -b "$DATA_DEVICE" ]; then
        blank "$DATA_DEVICE" ||
          die "$DATA_DEVICE holds something that is not labelled $DATA_LABEL; not touching it"
        format "$DATA_DEVICE"
        device=$DATA_DEVICE
        return
      fi
    else
      mapfile -t found < <(candidates)
      if [ "${#found[@]}" -eq 1 ]; then
        format "${found[0]}"
        device=${found[0]}
        return
      fi
      [ "${#found[@]}" -eq 0 ] || die "several blank disks (${found[*]}); set DATA_DEVICE in $conf"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      die "no data volume after ${WAIT_SECONDS}s (label $DATA_LABEL${DATA_DEVICE:+, device $DATA_DEVICE})"
    sleep 2
  done
}

# One entry for DATA_MOUNT, under FSTAB_MARK; a previous one is replaced, an equal one kept.
write_fstab() {
  local entry=$1 tmp
  touch "$FSTAB"
  tmp=$(mktemp "$FSTAB.gitlab-dr.XXXXXX")
  awk -v mark="$FSTAB_MARK" -v mnt="$DATA_MOUNT" '$0 != mark && !($1 !~ /^#/ && $2 == mnt)' \
    "$FSTAB" >"$tmp"
  printf '%s\n%s\n' "$FSTAB_MARK" "$entry" >>"$tmp"
  if cmp -s "$tmp" "$FSTAB"; then
    rm -f "$tmp"
    return
  fi
  chmod 0644 "$tmp"
  mv "$tmp" "$FSTAB"
  log "$FSTAB: $entry"
}

mount_volume() {
  local mounted
  if mountpoint -q "$DATA_MOUNT"; then
    mounted=$(findmnt -rnvo SOURCE --mountpoint "$DATA_MOUNT" | tail -n1)
    [ "$(readlink -f "$mounted")" = "$(readlink -f "$device")" ] ||
      die "$DATA_MOUNT holds $mounted, not the data volume $device; not mounting over it"
    return
  fi
  install -d -m 0755 "$DATA_MOUNT"
  mount --fstab "$FSTAB" "$DATA_MOUNT"
  log "mounted $device at $DATA_MOUNT"
}

# A btrfs subvolume's top folder is inode 256; an empty plain folder in its place is replaced.
make_subvolumes() {
  local name path
  for name in $DATA_SUBVOLUMES; do
    path=$DATA_MOUNT/$name
    if [ -d "$path" ] && [ "$(stat -c %i "$path")" = 256 ]; then
      continue
    fi
    if [ -d "$path" ] && ! rmdir "$path" 2>/dev/null; then
      log "$path is a folder with files, not a btrfs subvolume: left as it is, and inv pair refuses until it is one"
      continue
    fi
    btrfs subvolume create "$path" >/dev/null
    log "made the btrfs subvolume $path"
  done
}

device=""
find_volume
fstype=$(blkid -p -o value -s TYPE "$device" || true)
uuid=$(blkid -p -o value -s UUID "$device" || true)
if [ -z "$fstype" ] || [ -z "$uuid" ]; then
  die "$device is labelled $DATA_LABEL but shows no filesystem type or UUID"
fi
if [ "$fstype" = btrfs ]; then
  write_fstab "UUID=$uuid $DATA_MOUNT btrfs user_subvol_rm_allowed,noatime,$MOUNT_OPTIONS 0 0"
else
  log "$device holds $fstype, not btrfs: left as it is, and the sync takes its fallback" \
    "(PostgreSQL's backup API, hard-linked snapshots, a copy at promotion; no snapshots)"
  write_fstab "UUID=$uuid $DATA_MOUNT $fstype defaults,noatime,$MOUNT_OPTIONS 0 2"
fi
mount_volume
if [ "$fstype" = btrfs ]; then
  make_subvolumes
fi
log "the data volume ($fstype, UUID $uuid) is mounted at $DATA_MOUNT"
