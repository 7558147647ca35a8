{{/*
Who may ask the admission port for decisions (webhook.clientAuth): the apiserver's webhook client certificate,
verified at the TLS handshake against a CA the chart mounts from a ConfigMap.
*/}}
{{- define "smll-secrets.clientAuth" -}}
{{- if and .Values.webhook.clientAuth.enabled (not .Values.webhook.url) }}true{{ end }}
{{- end }}

{{/* The ConfigMap with the CA: the one named, or the chart's own rendered from caBundle. */}}
{{- define "smll-secrets.clientCAConfigMap" -}}
{{- if .Values.webhook.clientAuth.caConfigMap }}
{{- .Values.webhook.clientAuth.caConfigMap }}
{{- else }}
{{- printf "%s-webhook-client-ca" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Settings of the admission port that contradict each other fail with what to change. */}}
{{- define "smll-secrets.validateAdmissionPort" -}}
{{- $w := .Values.webhook }}
{{- $c := $w.clientAuth }}
{{- if and $c.enabled $w.url }}
{{- fail "webhook.clientAuth is for the in-cluster webhook; a webhook at webhook.url (development mode) is started with --client-ca-file by whoever runs it" }}
{{- end }}
{{- if and $c.enabled (not $c.caBundle) (not $c.caConfigMap) }}
{{- fail "webhook.clientAuth.enabled needs webhook.clientAuth.caBundle (PEM) or webhook.clientAuth.caConfigMap: the CA of the client certificate the apiserver presents to webhooks" }}
{{- end }}
{{- if and $c.caBundle $c.caConfigMap }}
{{- fail "webhook.clientAuth: set caBundle or caConfigMap, not both" }}
{{- end }}
{{- if and (not $c.enabled) (or $c.caBundle $c.caConfigMap $c.allowedNames) }}
{{- fail "webhook.clientAuth.caBundle, caConfigMap and allowedNames take effect only with webhook.clientAuth.enabled: true" }}
{{- end }}
{{- if or (eq (int $w.healthPort) (int $w.port)) (eq (int $w.healthPort) (int .Values.controller.metricsPort)) (and .Values.secretsApi.enabled (eq (int $w.healthPort) (int .Values.secretsApi.port))) }}
{{- fail "webhook.healthPort must differ from webhook.port, secretsApi.port and controller.metricsPort (the containers share the pod's ports)" }}
{{- end }}
{{- end }}
