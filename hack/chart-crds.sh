#!/usr/bin/env bash
# Writes the chart's CRD template from the generated CRDs (config/crd/bases). Helm never updates
# CRDs in a chart's crds/ directory, but it does update those it renders from templates (as
# cert-manager's chart does): crds.enabled renders them, crds.keep keeps them (and every
# channel) when the release is uninstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
out=charts/herald/templates/crds.yaml
{
	echo "{{- if .Values.crds.enabled }}"
	for f in config/crd/bases/*.yaml; do
		awk '
			/^  annotations:$/ && !done {
				print "  labels:"
				print "    {{- include \"herald.labels\" . | nindent 4 }}"
				print
				print "    {{- if .Values.crds.keep }}"
				print "    helm.sh/resource-policy: keep"
				print "    {{- end }}"
				done = 1
				next
			}
			{ print }
		' "$f"
	done
	echo "{{- end }}"
} >"$out.tmp"
mv "$out.tmp" "$out"
