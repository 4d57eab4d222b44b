#!/bin/bash
# The consistency writer, run as root in the master's GitLab (stand-in) container while the
# sidecars sync. It does what GitLab does: a file first, then a row naming it.
#   uploads: a file under gitlab-rails/uploads (written aside, renamed into place), then its
#            row in dr_uploads (path, sha256);
#   pushes:  a git push over HTTP (objects, then the ref), then a row in dr_commits naming the
#            pushed commit; every seventh push makes a new repository (a pass may see it
#            appear mid-way).
#   images:  an image pushed to the container registry through its HTTP API (a random tar
#            layer and a config, then the manifest under a tag), then a row in dr_tags naming
#            the tag and the manifest's digest; tags are pushed again with new content, and
#            every fifth write deletes one: its row first, then its manifest (GitLab's order:
#            no row names what the registry no longer holds).
# PAUSE (seconds, default none) paces the uploads and the images: a lighter load on a busy
# machine. MOVES=0 pushes each image under a tag of its own and never deletes one: on the
# fallback, a tag moved or deleted between pg_backup_stop and the copy after it is the gap its
# module docstring names (gitlab_sync/backup_pass.py), which only snapshots from one instant
# close.
# Each acknowledged row is one line in $RUN/acks, ending with when it was acknowledged
# (seconds since the epoch, after the row's commit returned):
#   upload <path> <sha256> <row id> <time>
#   commit <project> <sha> <time>
#   tag <repo> <tag> <digest> <time>        (and "tag-try ..." before the push began)
#   untag <repo> <tag> <digest> <time>      (and "untag-try ..." before the delete began)
# Each loop writes "<name> <exit code>" to $RUN/exited when it ends, which it does when
# $RUN/stop exists (or on its first error, with the error in $RUN/log). Started again after its
# container was killed, it goes on: new names (a file of the killed run is never rewritten, a
# row never names a file that changed), and the lock files git left when it was killed (in
# the writer's work trees, and a ref's or HEAD's in GitLab's repositories: GitLab's
# housekeeping removes such stale locks) removed before anything pushes again.
set -euo pipefail
RUN=/tmp/dr-writer
UPLOADS=/var/opt/gitlab/gitlab-rails/uploads
REPOSITORIES=/var/opt/gitlab/git-data/repositories
PROJECTS=(dr/alpha dr/beta dr/group/gamma)
IMAGES=(dr/app dr/group/tool)
REGISTRY=http://127.0.0.1:5050
PAUSE=${PAUSE:-0}
START=${EPOCHREALTIME/./} # this run's names

sql() { # one statement; what it returns
  gitlab-psql -X -q -tA -v ON_ERROR_STOP=1 -c "$1"
}

uploads() {
  local k=0 dir name sum id
  while [ ! -e "$RUN/stop" ]; do
    k=$((k + 1))
    dir=dr/$((k % 16))
    name=$dir/$START-$k.bin
    mkdir -p "$UPLOADS/$dir"
    head -c $((1024 << (k % 5))) /dev/urandom >"$UPLOADS/$dir/.$START-$k.tmp"
    mv "$UPLOADS/$dir/.$START-$k.tmp" "$UPLOADS/$name"
    sum=$(sha256sum "$UPLOADS/$name")
    sum=${sum%% *}
    id=$(sql "INSERT INTO dr_uploads (path, sha256) VALUES ('$name', '$sum') RETURNING id")
    echo "upload $name $sum $id $EPOCHREALTIME" >>"$RUN/acks"
    if [ "$PAUSE" != 0 ]; then sleep "$PAUSE"; fi
  done
}

pushes() {
  local n=0 project work sha
  while [ ! -e "$RUN/stop" ]; do
    n=$((n + 1))
    project=${PROJECTS[n % ${#PROJECTS[@]}]}
    if [ $((n % 7)) -eq 0 ]; then project=dr/fresh/p$START-$n; fi
    work=$RUN/work/$project
    if [ ! -d "$work/.git" ]; then
      git init -q -b main "$work"
      git -C "$work" remote add origin "http://127.0.0.1/$project.git"
    fi
    echo "$START $n" >"$work/file-$((n % 8))"
    git -C "$work" add --all
    git -C "$work" -c user.name=dr -c user.email=dr@example.invalid commit -q -m "write $n"
    git -C "$work" push -q origin main
    sha=$(git -C "$work" rev-parse HEAD)
    sql "INSERT INTO dr_commits (project, sha) VALUES ('$project', '$sha')" >/dev/null
    echo "commit $project $sha $EPOCHREALTIME" >>"$RUN/acks"
  done
}

blob_put() { # repository, file: upload the file as a blob (POST, then PUT with its digest)
  local digest location sep
  digest=$(sha256sum "$2")
  digest=sha256:${digest%% *}
  location=$(curl -fsS -X POST -D - -o /dev/null "$REGISTRY/v2/$1/blobs/uploads/" |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  sep='?'
  if [[ $location == *\?* ]]; then sep='&'; fi
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$2" \
    -o /dev/null "$location${sep}digest=$digest"
  echo "$digest"
}

image_make() { # label: a random one-layer image in $RUN/image; its manifest's digest
  local dir=$RUN/image diff layer config digest
  rm -rf "$dir"
  mkdir -p "$dir/root"
  head -c $((1024 << (RANDOM % 4))) /dev/urandom >"$dir/root/data.bin"
  tar -C "$dir/root" -cf "$dir/layer.tar" data.bin
  diff=$(sha256sum "$dir/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":{"Labels":{"dr":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$1" "${diff%% *}" >"$dir/config.json"
  layer=$(sha256sum "$dir/layer.tar")
  config=$(sha256sum "$dir/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "${config%% *}" "$(stat -c %s "$dir/config.json")" "${layer%% *}" \
    "$(stat -c %s "$dir/layer.tar")" >"$dir/manifest.json"
  digest=$(sha256sum "$dir/manifest.json")
  echo "sha256:${digest%% *}"
}

image_push() { # repository, tag, digest: push $RUN/image; fails unless the registry says digest
  local dir=$RUN/image said
  blob_put "$1" "$dir/layer.tar" >/dev/null
  blob_put "$1" "$dir/config.json" >/dev/null
  said=$(curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$dir/manifest.json" -D - -o /dev/null "$REGISTRY/v2/$1/manifests/$2" |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
  [ "$said" = "$3" ] || { echo "the registry took $1:$2 as ${said:-nothing}, not $3" >&2; return 1; }
}

images() {
  local n=0 repo tag digest
  while [ ! -e "$RUN/stop" ]; do
    n=$((n + 1))
    repo=${IMAGES[n % ${#IMAGES[@]}]}
    tag=t$(((n / ${#IMAGES[@]}) % 4))
    if [ "${MOVES:-1}" = 0 ]; then tag=u$START-$n; fi
    digest=$(sql "SELECT digest FROM dr_tags WHERE repo = '$repo' AND tag = '$tag'")
    if [ "${MOVES:-1}" != 0 ] && [ $((n % 5)) -eq 4 ] && [ -n "$digest" ]; then
      echo "untag-try $repo $tag $digest $EPOCHREALTIME" >>"$RUN/acks"
      sql "DELETE FROM dr_tags WHERE repo = '$repo' AND tag = '$tag'" >/dev/null
      curl -fsS -X DELETE -o /dev/null "$REGISTRY/v2/$repo/manifests/$digest"
      echo "untag $repo $tag $digest $EPOCHREALTIME" >>"$RUN/acks"
    else
      digest=$(image_make "$START-$n")
      echo "tag-try $repo $tag $digest $EPOCHREALTIME" >>"$RUN/acks"
      image_push "$repo" "$tag" "$digest"
      sql "INSERT INTO dr_tags (repo, tag, digest) VALUES ('$repo', '$tag', '$digest')
           ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest, at = now()" >/dev/null
      echo "tag $repo $tag $digest $EPOCHREALTIME" >>"$RUN/acks"
    fi
    if [ "$PAUSE" != 0 ]; then sleep "$PAUSE"; fi
  done
}

run() { # a loop, its errors into the log, its end into exited
  set +e
  (
    set -e
    "$1"
  ) 2>>"$RUN/log"
  echo "$1 $?" >>"$RUN/exited"
}

mkdir -p "$RUN"
for tree in "$RUN/work" "$REPOSITORIES"; do
  if [ -d "$tree" ]; then find "$tree" -name '*.lock' -type f -delete; fi
done
run uploads &
run pushes &
run images &
wait
