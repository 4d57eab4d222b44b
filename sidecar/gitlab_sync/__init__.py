"""gitlab-sync: the gitlab-rsync sidecar's code (standard library only)."""
