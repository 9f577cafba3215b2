#!/bin/sh
# Licensed under the Apache License, Version 2.0.
#
# imc-healthcheck: the image's HEALTHCHECK. GET /healthz on the address and
# port Apache listens on (IMC_LISTEN_ADDRESS, IMC_PORT); exit 0 on 200.
addr=${IMC_LISTEN_ADDRESS:-127.0.0.1}
case $addr in
0.0.0.0) addr=127.0.0.1 ;;
"[::]" | "::") addr="[::1]" ;;
*:*) case $addr in \[*) ;; *) addr="[$addr]" ;; esac ;;
esac
exec curl -fsS -o /dev/null --max-time 4 "http://$addr:${IMC_PORT:-8080}/healthz"
