#!/bin/bash
# The consistency writer, run as root in the master's GitLab (stand-in) container while the
# sidecars sync. It does what GitLab does: a file first, then a row naming it.
#   uploads: a file under gitlab-rails/uploads (written aside, renamed into place), then its
#            row in dr_uploads (path, sha256);
#   pushes:  a git push over HTTP (objects, then the ref), then a row in dr_commits naming the
#            pushed commit; every seventh push makes a new repository (a pass may see it
#            appear mid-way).
# PAUSE (seconds, default none) paces the uploads: a lighter load on a busy machine.
# Each acknowledged row is one line in $RUN/acks, ending with when it was acknowledged
# (seconds since the epoch, after the row's commit returned):
#   upload <path> <sha256> <row id> <time>
#   commit <project> <sha> <time>
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
wait
