#!/bin/bash
# Start PostgreSQL on a writable copy of one snapshot (the GitLab tree at $1) and check that
# every row the consistency writer made names something the copy holds. Run as root in a
# container of the stand-in image (its PostgreSQL, users, git and sha256sum).
#
# PostgreSQL starts as GitLab's would on that tree (crash recovery, or recovery to the end of a
# base backup when the copy holds a backup_label), on a socket of its own and no TCP port, and
# with fsync off: the copy is thrown away, and fsync changes what a running server makes
# durable, not what recovery finds (it saves the fsync of every file before crash recovery).
# Output, tab-separated: first "rows <uploads> <commits> <tags>" (how many rows each table
# holds), then one line per row:
#   upload <path> <OK|FAILED|FAILED open or read>      (sha256sum -c's verdict on the file)
#   commit <project> <sha> <ok|missing|incomplete>     (the commit, then its whole tree)
#   tag <repo> <tag> <digest>                          (judged by snapshot_check.py against the
#                                                       registry's links, ops.rehearsal.registry)
# With a second argument, a query, then one line per row it returns: "asked <its columns>".
# Exits 3 (PostgreSQL's log on stderr) when the server does not start.
set -euo pipefail
root=$1
asked=${2:-}
data=$root/data/postgresql/data
socket=$(mktemp -d)
chown gitlab-psql:gitlab-psql "$socket"

as_psql() {
  chpst -u gitlab-psql:gitlab-psql "$@"
}
query() {
  as_psql psql -X -q -tA -F $'\t' -v ON_ERROR_STOP=1 -h "$socket" -d gitlabhq_production -c "$1"
}

if ! as_psql pg_ctl -D "$data" -w -t 120 -l "$socket/log" \
  -o "-c unix_socket_directories=$socket -c listen_addresses='' -c fsync=off" start >/dev/null; then
  cat "$socket/log" >&2
  exit 3
fi
trap 'as_psql pg_ctl -D "$data" -m immediate stop >/dev/null' EXIT

query "SELECT 'rows', (SELECT count(*) FROM dr_uploads), (SELECT count(*) FROM dr_commits),
  (SELECT count(*) FROM dr_tags)"
query "SELECT sha256 || '  ' || path FROM dr_uploads" >"$socket/uploads"
cd "$root/data/gitlab-rails/uploads"
sha256sum -c "$socket/uploads" >"$socket/verdicts" 2>/dev/null || true  # 1 when one fails
cd /
sed -E 's/^(.*): (OK|FAILED|FAILED open or read)$/upload\t\1\t\2/' "$socket/verdicts"

git_in() { # repository, git arguments
  git -c safe.directory='*' --git-dir="$1" "${@:2}"
}

check_commits() { # project; the project's commits on stdin
  local project=$1 repo sha line present=()
  repo=$root/data/git-data/repositories/$project.git
  if [ ! -d "$repo" ]; then
    while read -r sha; do printf 'commit\t%s\t%s\tmissing\n' "$project" "$sha"; done
    return
  fi
  while read -r line; do
    sha=${line%% *}
    if [[ $line == *" missing" ]]; then
      printf 'commit\t%s\t%s\tmissing\n' "$project" "$sha"
    else
      present+=("$sha")
    fi
  done < <(git_in "$repo" cat-file --batch-check)
  [ "${#present[@]}" -gt 0 ] || return 0
  # The whole tree of every commit at once; one by one only when something is missing.
  if ! git_in "$repo" rev-list --objects --no-walk --missing=print "${present[@]}" | grep -q '^?'
  then
    for sha in "${present[@]}"; do printf 'commit\t%s\t%s\tok\n' "$project" "$sha"; done
    return
  fi
  for sha in "${present[@]}"; do
    if git_in "$repo" rev-list --objects --no-walk --missing=print "$sha" | grep -q '^?'; then
      printf 'commit\t%s\t%s\tincomplete\n' "$project" "$sha"
    else
      printf 'commit\t%s\t%s\tok\n' "$project" "$sha"
    fi
  done
}

query "SELECT DISTINCT project FROM dr_commits ORDER BY 1" >"$socket/projects"
while read -r project; do
  query "SELECT sha FROM dr_commits WHERE project = '$project'" | check_commits "$project"
done <"$socket/projects"

query "SELECT 'tag', repo, tag, digest FROM dr_tags ORDER BY 2, 3"

if [ -n "$asked" ]; then
  query "$asked" | sed 's/^/asked\t/'
fi
