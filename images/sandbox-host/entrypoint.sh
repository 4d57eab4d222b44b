#!/bin/sh
# SSHD_DOCKER picks what the host offers behind sshd:
#   socket  the docker CLI and the engine's socket (bind-mounted by the sandbox or the test): a good host
#   absent  no docker CLI at all: ssh works, `docker system dial-stdio` does not
# With no socket mounted, the CLI is there but no engine answers.
# SSHD_BASTION=yes makes it a jump host: it forwards the operator's connections (ssh -W) to the
# hosts behind it, which a host of the pair never does.
set -eu
if [ "${SSHD_DOCKER:-socket}" = absent ]; then
  rm -f /usr/bin/docker
fi
if [ -S /var/run/docker.sock ]; then
  # Let admin use the engine, whatever group owns the socket on this machine.
  gid=$(stat -c %g /var/run/docker.sock)
  group=$(getent group "$gid" | cut -d: -f1 || true)
  if [ -z "$group" ]; then
    groupadd --gid "$gid" hostdocker
    group=hostdocker
  fi
  usermod --append --groups "$group" admin
fi
if [ "${SSHD_BASTION:-no}" = yes ]; then
  exec /usr/sbin/sshd -D -e -o AllowTcpForwarding=yes
fi
exec /usr/sbin/sshd -D -e
