{{/* The registry's token endpoint (docs/registry.md): on when the registry is and tokens.enabled. */}}
{{- define "smll-secrets.registryTokens" -}}
{{- if and .Values.controller.registry.url .Values.controller.registry.tokens.enabled }}true{{ end }}
{{- end }}

{{/* The CA the tokens' signing keys are certified by: the operator's Secret, or the one the chart keeps. */}}
{{- define "smll-secrets.registryTokenCA" -}}
{{- .Values.controller.registry.tokens.caSecret | default (printf "%s-registry-token-ca" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "smll-secrets.registryTokenService" -}}
{{- printf "%s-registry-tokens" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
