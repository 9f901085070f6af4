#!/bin/bash
# Container health check: GET http://127.0.0.1:PORT/PATH and succeed on a 200.
#
#   tollgate-healthcheck PORT [PATH]      (PATH defaults to /status/ready)
#
# Why bash's /dev/tcp and not curl: the runtime image carries only what the binary needs,
# and curl would add a dozen libraries to every CP and DP container for one probe.
set -u
port="${1:?usage: tollgate-healthcheck PORT [PATH]}"
path="${2:-/status/ready}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS=' ' read -r -t 5 _ status _ <&3 || exit 1
[ "$status" = 200 ]
