#!/usr/bin/env bash
# build-image.sh [TAG]: builds commitd's container image (deploy/Dockerfile)
# as TAG (default commitd:latest) with the first container builder that works
# here: $CONTAINER_BUILDER if set, else docker (when its daemon answers),
# podman or buildah. The binary is built on this machine with the Go
# toolchain, static and without file paths; the image's base is scratch, so
# nothing is pulled from a registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-commitd:latest}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

CGO_ENABLED=0 go build -C "$root" -trimpath -buildvcs=auto -ldflags=-s -o "$ctx/commitd" ./cmd/commitd
printf 'root:x:0:0:root:/root:/sbin/nologin\ncommitd:x:65532:65532:commitd:/var/lib/commitd:/sbin/nologin\n' >"$ctx/passwd"
printf 'root:x:0:\ncommitd:x:65532:\n' >"$ctx/group"
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
	cp /etc/ssl/certs/ca-certificates.crt "$ctx/certs.pem"
else
	: >"$ctx/certs.pem" # no bundle here: the image trusts only --tls-ca
fi
mkdir "$ctx/data"
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"

builder=${CONTAINER_BUILDER:-}
if [ -z "$builder" ]; then
	if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
		builder=docker
	elif command -v podman >/dev/null; then
		builder=podman
	elif command -v buildah >/dev/null; then
		builder=buildah
	else
		echo "build-image.sh: no container builder: install docker (with a running daemon), podman or buildah (apt-get install buildah)" >&2
		exit 1
	fi
fi
case $builder in
docker | podman) "$builder" build -t "$tag" -f "$ctx/Dockerfile" "$ctx" ;;
buildah) buildah bud -t "$tag" -f "$ctx/Dockerfile" "$ctx" ;;
*)
	echo "build-image.sh: CONTAINER_BUILDER=$builder: want docker, podman or buildah" >&2
	exit 1
	;;
esac
