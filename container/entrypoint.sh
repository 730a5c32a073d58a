#!/bin/sh
# The image's entrypoint: runs papr-emu; `serve` also gets the files mounted in /etc/papr-emu
# (PAPR_EMU_DIR), each only if it is there and its flag is not given already:
#
#   tls.crt, tls.key   --tls-cert, --tls-key     (TLS)
#   client-ca.pem      --tls-client-ca           (mTLS)
#   admin.token        --admin-token-file        (bearer tokens; or set PAPR_EMU_ADMIN_TOKEN)
#
# Without TLS and tokens the server refuses 0.0.0.0 with a one-line error, unless --insecure.
set -eu
dir=${PAPR_EMU_DIR:-/etc/papr-emu}

given() {  # given FLAG ARG...: is FLAG (or FLAG=...) among the ARGs?
    flag=$1
    shift
    for arg; do
        case $arg in "$flag" | "$flag"=*) return 0 ;; esac
    done
    return 1
}

if [ "${1-}" = serve ]; then
    if [ -e "$dir/tls.crt" ] || [ -e "$dir/tls.key" ]; then  # one without the other: the server says which
        given --tls-cert "$@" || set -- "$@" --tls-cert "$dir/tls.crt"
        given --tls-key "$@" || set -- "$@" --tls-key "$dir/tls.key"
    fi
    if [ -e "$dir/client-ca.pem" ]; then
        given --tls-client-ca "$@" || set -- "$@" --tls-client-ca "$dir/client-ca.pem"
    fi
    if [ -e "$dir/admin.token" ]; then
        given --admin-token-file "$@" || set -- "$@" --admin-token-file "$dir/admin.token"
    fi
fi
exec papr-emu "$@"
