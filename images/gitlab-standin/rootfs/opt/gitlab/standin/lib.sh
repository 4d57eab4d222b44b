# shellcheck shell=bash disable=SC2034
# Paths shared by the stand-in's scripts (sourced): Omnibus's locations and names.

PG_BIN=/usr/lib/postgresql/15/bin
PG_MAJOR=15
PG_HOME=/var/opt/gitlab/postgresql          # gitlab-psql's home and the socket directory
PG_DATA=$PG_HOME/data
PG_PORT=5432
PG_SUPERUSER=gitlab-psql
GITLAB_DB=gitlabhq_production
GITLAB_DB_USER=gitlab                       # Omnibus's postgresql['sql_user']
REPOSITORIES=/var/opt/gitlab/git-data/repositories
UPLOADS=/var/opt/gitlab/gitlab-rails/uploads
REGISTRY_STORAGE=/var/opt/gitlab/gitlab-rails/shared/registry   # Omnibus's registry storage
REGISTRY_CONFIG=/var/opt/gitlab/registry/config.yml
REGISTRY_ADDR=127.0.0.1:5000               # Omnibus's registry['registry_http_addr']
SECRETS=/etc/gitlab/gitlab-secrets.json
APP_SOCKET=/var/opt/gitlab/gitlab-rails/sockets/gitlab.socket   # Omnibus's puma socket
STANDIN=/opt/gitlab/standin
