#!/usr/bin/env bash
# Signs what `make release` pushed, keyless (Sigstore: the signer's OIDC identity, e.g. the
# release workflow's): the image and the chart by the digests in $DIST/DIGESTS, and
# $DIST/SHA256SUMS (its bundle beside it). Needs cosign and an identity: it runs in the release
# workflow; elsewhere cosign asks for a browser sign-in.
#
# Verify a release:
#   cosign verify ghcr.io/heraldhq/herald@sha256:... \
#     --certificate-identity-regexp '^https://github.com/heraldhq/herald/\.github/workflows/release\.yml@refs/tags/v' \
#     --certificate-oidc-issuer https://token.actions.githubusercontent.com
set -euo pipefail
cd "$(dirname "$0")/.."
DIST=${DIST:-dist}
COSIGN=${COSIGN:-cosign}
refs=()
while read -r kind ref; do
	case $kind in
	image) refs+=("${ref%:*@*}@${ref##*@}") ;;                     # <repo>:v<version>@<digest>
	chart) ref=${ref#oci://} && refs+=("${ref%:*@*}@${ref##*@}") ;; # oci://<repo>:<version>@<digest>
	esac
done <"$DIST/DIGESTS"
if [ ${#refs[@]} -ne 2 ]; then
	echo "sign: $DIST/DIGESTS names ${#refs[@]} pushed artefacts, want the image and the chart (make release with REGISTRY)" >&2
	exit 1
fi
for ref in "${refs[@]}"; do
	echo "signing $ref"
	"$COSIGN" sign --yes "$ref"
done
"$COSIGN" sign-blob --yes --bundle "$DIST/SHA256SUMS.sigstore.json" "$DIST/SHA256SUMS"
