{{/*
Names are fixed, not derived from the release name: the manager looks its webhook Service,
certificate Secret and MutatingWebhookConfiguration up by these names (see values.yaml).
*/}}

{{/* herald.labels are the common labels of every object. */}}
{{- define "herald.labels" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* herald.selectorLabels select the manager pods; they match config/manager (kustomize). */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/component: manager
{{- end }}

{{/* herald.image is the manager image: repository@digest when pinned, else repository:tag,
the tag defaulting to v<appVersion>. */}}
{{- define "herald.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (printf "v%s" .Chart.AppVersion)) -}}
{{- end -}}
{{- end }}

{{/* herald.relayImage is the relay image, defaulting to the manager image part by part; the
manager's digest pins it too while the relay names no repository or tag of its own. */}}
{{- define "herald.relayImage" -}}
{{- $repo := .Values.relay.image.repository | default .Values.image.repository -}}
{{- $digest := .Values.relay.image.digest -}}
{{- if and (not $digest) (not .Values.relay.image.repository) (not .Values.relay.image.tag) -}}
{{- $digest = .Values.image.digest -}}
{{- end -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- $tag := .Values.relay.image.tag | default .Values.image.tag | default (printf "v%s" .Chart.AppVersion) -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end }}

{{/* herald.sidecarImage is the injected sidecar's image: sidecar.image where set, part by part,
else the relay image. */}}
{{- define "herald.sidecarImage" -}}
{{- with .Values.sidecar.image -}}
{{- if .digest -}}
{{- printf "%s@%s" (.repository | default $.Values.relay.image.repository | default $.Values.image.repository) .digest -}}
{{- else if or .repository .tag -}}
{{- printf "%s:%s" (.repository | default $.Values.relay.image.repository | default $.Values.image.repository) (.tag | default $.Values.relay.image.tag | default $.Values.image.tag | default (printf "v%s" $.Chart.AppVersion)) -}}
{{- else -}}
{{- include "herald.relayImage" $ -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* herald.serviceAccountName is the manager's service account. */}}
{{- define "herald.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "herald-manager" -}}
{{- end }}

{{/* herald.webhookHost is the in-cluster DNS name of the webhook Service. */}}
{{- define "herald.webhookHost" -}}
{{- printf "herald-webhook.%s.svc" .Release.Namespace -}}
{{- end }}

{{/* herald.certManagerIssuerRef is the issuer of the webhook Certificate in certManager mode. */}}
{{- define "herald.certManagerIssuerRef" -}}
{{- with .Values.webhook.certificates.certManager.issuerRef }}
name: {{ .name }}
kind: {{ .kind | default "Issuer" }}
group: {{ .group | default "cert-manager.io" }}
{{- else }}
name: herald-selfsigned
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}

{{/* herald.validate fails on combinations of values that the schema cannot explain well. */}}
{{- define "herald.validate" -}}
{{- if and .Values.redis.tls.caSecret.name (not .Values.redis.tls.enabled) -}}
{{- fail "redis.tls.caSecret.name is set but redis.tls.enabled is false: set redis.tls.enabled=true or drop the CA Secret" -}}
{{- end -}}
{{- if and .Values.redis.tls.clientSecret.name (not .Values.redis.tls.enabled) -}}
{{- fail "redis.tls.clientSecret.name is set but redis.tls.enabled is false: set redis.tls.enabled=true or drop the client certificate Secret" -}}
{{- end -}}
{{- if and .Values.redis.tls.clientCASecret.name (not .Values.redis.tls.enabled) -}}
{{- fail "redis.tls.clientCASecret.name is set but redis.tls.enabled is false: set redis.tls.enabled=true or drop the client CA Secret" -}}
{{- end -}}
{{- if and .Values.redis.tls.serverName (not .Values.redis.tls.enabled) -}}
{{- fail "redis.tls.serverName is set but redis.tls.enabled is false: set redis.tls.enabled=true or drop the server name" -}}
{{- end -}}
{{- if and .Values.webhook.certificates.certManager.issuerRef (ne .Values.webhook.certificates.mode "certManager") -}}
{{- fail "webhook.certificates.certManager.issuerRef is set but webhook.certificates.mode is not certManager: set the mode or drop the issuerRef" -}}
{{- end -}}
{{- end }}
