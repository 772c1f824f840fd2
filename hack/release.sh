#!/usr/bin/env bash
# Builds a release into $DIST (default dist/) and, with REGISTRY, pushes it:
#
#   make release VERSION=x.y.z                          # write dist/ only
#   make release VERSION=x.y.z REGISTRY=ghcr.io/heraldhq  # and push the image and the chart
#
#   herald-linux-amd64, herald-linux-arm64
#                             the binaries, their version stamped in (herald version)
#   herald-linux-<arch>.cdx.json
#                             each binary's SBOM (CycloneDX, from the module information Go
#                             builds into it: every module and its version)
#   herald-image.tar          the image <REGISTRY>/herald:v<VERSION>: an OCI image index of
#                             linux/amd64 and linux/arm64, as an OCI archive (crane push, skopeo,
#                             ctr import); the same binaries always give the same digest
#   herald-<VERSION>.tgz      the Helm chart (version and appVersion <VERSION>) whose default
#                             image is <REGISTRY>/herald@<digest>
#   herald.yaml               one-file install: the namespace herald-system, the CRD and
#                             everything the chart renders with its default values
#   SHA256SUMS                sha256sum of each of the above
#   DIGESTS                   the image's and (when pushed) the chart's digests
#
# REGISTRY (default ghcr.io/heraldhq, pushed only when set) is a registry and a path: the image
# goes to <REGISTRY>/herald, the chart to oci://<REGISTRY>/charts/herald. Credentials are those
# of docker login / helm registry login. A registry on a loopback address is spoken to over plain
# HTTP (a local test registry).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:?"set VERSION, e.g. make release VERSION=0.2.0"}
if ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release: VERSION=$VERSION is not semver (x.y.z or x.y.z-pre)" >&2
	exit 1
fi
push=false
if [ -n "${REGISTRY:-}" ]; then
	push=true
fi
REGISTRY=${REGISTRY:-ghcr.io/heraldhq}
REGISTRY=${REGISTRY%/}
DIST=${DIST:-dist}
HELM=${HELM:-bin/helm}
KUBE_VERSION=${KUBE_VERSION:-1.37.2}
CYCLONEDX_GOMOD_VERSION=${CYCLONEDX_GOMOD_VERSION:-v1.10.0}
ARCHS=(amd64 arm64)
plain_http=()
if [[ $REGISTRY =~ ^(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?(/|$) ]]; then
	plain_http=(--plain-http)
fi
rm -rf "$DIST"
mkdir -p "$DIST"

for arch in "${ARCHS[@]}"; do
	GOOS=linux GOARCH=$arch CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/heraldhq/herald/internal/version.Version=$VERSION" \
		-o "$DIST/herald-linux-$arch" .
	if ! out=$(go run "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$CYCLONEDX_GOMOD_VERSION" bin -json \
		-version "$VERSION" -output "$DIST/herald-linux-$arch.cdx.json" "$DIST/herald-linux-$arch" 2>&1); then
		echo "release: the SBOM of herald-linux-$arch: $out" >&2
		exit 1
	fi
done
platforms=$(printf 'linux/%s,' "${ARCHS[@]}")
image_args=(-repo "$REGISTRY" -tag "v$VERSION" -only herald -platforms "${platforms%,}" -herald "$DIST/herald-linux-{arch}")
built=$(go run ./hack/images -out "$DIST" "${image_args[@]}")
read -r _ image_ref image_digest <<<"$built"
mv "$DIST/herald.tar" "$DIST/herald-image.tar"

# The chart names the image by its digest: what was tested is what runs, whatever the tag does.
chart=$(mktemp -d)
trap 'rm -rf "$chart"' EXIT
cp -r charts/herald "$chart/herald"
sed -i -e '/^image:/,/^[a-z]/ { s|^  repository: .*|  repository: '"$REGISTRY/herald"'|; s|^  digest: ""$|  digest: "'"$image_digest"'"| }' \
	"$chart/herald/values.yaml"
if ! grep -q "^  digest: \"$image_digest\"$" "$chart/herald/values.yaml"; then
	echo "release: could not pin the image digest in the chart's values.yaml" >&2
	exit 1
fi
"$HELM" package "$chart/herald" --version "$VERSION" --app-version "$VERSION" -d "$DIST" >/dev/null
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

# Pushed last, once everything is built: the image (the same index again), then the chart.
echo "image $image_ref@$image_digest" >"$DIST/DIGESTS"
if $push; then
	pushed=$(go run ./hack/images -out "" -push "${image_args[@]}")
	read -r _ _ pushed_digest <<<"$pushed"
	if [ "$pushed_digest" != "$image_digest" ]; then
		echo "release: pushed the image as $pushed_digest, built it as $image_digest" >&2
		exit 1
	fi
	out=$("$HELM" push "$DIST/herald-$VERSION.tgz" "oci://$REGISTRY/charts" "${plain_http[@]}" 2>&1) || {
		echo "$out" >&2
		exit 1
	}
	chart_digest=$(sed -n 's/^Digest: //p' <<<"$out")
	if ! [[ $chart_digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
		echo "release: helm push named no chart digest: $out" >&2
		exit 1
	fi
	echo "chart oci://$REGISTRY/charts/herald:$VERSION@$chart_digest" >>"$DIST/DIGESTS"
fi

(cd "$DIST" && sha256sum herald-linux-* herald-image.tar "herald-$VERSION.tgz" herald.yaml >SHA256SUMS)
echo "release $VERSION in $DIST:"
ls -l "$DIST"
cat "$DIST/DIGESTS"
