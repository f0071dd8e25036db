#!/bin/sh
# gen-certs.sh DIR — test PKI: two unrelated CAs, a server certificate
# (CA 1, for localhost and 127.0.0.1), a client certificate from each CA
# (CN edge-1).
set -eu
d=$1
mkdir -p "$d"
cd "$d"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
for ca in ca1 ca2; do
  key $ca.key
  openssl req -x509 -new -key $ca.key -sha256 -days 30 -subj "/CN=kubeedge-c test $ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out $ca.crt 2>/dev/null
done
leaf() { # name ca cn ext days
  key $1.key
  openssl req -new -key $1.key -subj "/CN=$3" -out $1.csr 2>/dev/null
  printf '%s\n' "$4" > $1.ext
  openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -sha256 \
    -days "$5" -extfile $1.ext -out $1.crt 2>/dev/null
}
leaf server ca1 localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth" 30
leaf client1 ca1 edge-1 "extendedKeyUsage=clientAuth" 30
leaf client2 ca2 edge-1 "extendedKeyUsage=clientAuth" 30
