#!/usr/bin/env bash
# Writes a release into $DIST (default dist/): `make release VERSION=x.y.z`.
#
#   herald-linux-amd64        the binary, its version stamped in (herald version), which also
#                             makes v<VERSION> the default relay image
#   herald-image.tar          the image ghcr.io/heraldhq/herald:v<VERSION> as an OCI archive
#                             (load it with skopeo, crane, ctr or docker load)
#   herald-<VERSION>.tgz      the Helm chart (version and appVersion <VERSION>)
#   herald.yaml               one-file install: the namespace herald-system, the CRD and
#                             everything the chart renders with its default values
#   SHA256SUMS                sha256sum of each of the above
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:?"set VERSION, e.g. make release VERSION=0.2.0"}
if ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release: VERSION=$VERSION is not semver (x.y.z or x.y.z-pre)" >&2
	exit 1
fi
DIST=${DIST:-dist}
HELM=${HELM:-bin/helm}
KUBE_VERSION=${KUBE_VERSION:-1.37.2}
rm -rf "$DIST"
mkdir -p "$DIST"

GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X github.com/heraldhq/herald/internal/version.Version=$VERSION" \
	-o "$DIST/herald-linux-amd64" .
go run ./hack/images -out "$DIST" -tag "v$VERSION" -herald "$DIST/herald-linux-amd64" -only herald >/dev/null
mv "$DIST/herald.tar" "$DIST/herald-image.tar"

"$HELM" package charts/herald --version "$VERSION" --app-version "$VERSION" -d "$DIST" >/dev/null
{
	cat <<YAML
# Herald $VERSION: kubectl apply --server-side -f herald.yaml
apiVersion: v1
kind: Namespace
metadata:
  name: herald-system
---
YAML
	"$HELM" template herald "$DIST/herald-$VERSION.tgz" --namespace herald-system --kube-version "$KUBE_VERSION"
} >"$DIST/herald.yaml"

(cd "$DIST" && sha256sum herald-linux-amd64 herald-image.tar "herald-$VERSION.tgz" herald.yaml >SHA256SUMS)
echo "release $VERSION in $DIST:"
ls -l "$DIST"
