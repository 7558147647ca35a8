{{/*
The webhook entries of one configuration, read from the chart's files/ (the definitions the local environment
registers too) with clientConfig and namespaceSelector added for this install. Arguments: the root context, the
file, the path served, and the configuration's kind (for the lookup of the live caBundle).
*/}}
{{- define "smll-secrets.webhooks" -}}
{{- $root := index . 0 }}
{{- $file := index . 1 }}
{{- $path := index . 2 }}
{{- $kind := index . 3 }}
{{- $v := $root.Values }}
{{- $name := include "smll-secrets.webhookConfigurationName" $root }}
{{- $live := dict }}
{{- if include "smll-secrets.selfManagedTLS" $root }}
{{- with lookup "admissionregistration.k8s.io/v1" $kind "" $name }}
{{- range $hook := (.webhooks | default list) }}
{{- if and $hook.clientConfig $hook.clientConfig.caBundle }}
{{- $_ := set $live $hook.name $hook.clientConfig.caBundle }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $excluded := concat (list "kube-system" $root.Release.Namespace) $v.webhook.excludeNamespaces | uniq }}
{{- $selector := dict "matchExpressions" (list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded)) }}
{{- $hooks := list }}
{{- range $hook := $root.Files.Get $file | fromYamlArray }}
{{- $clientConfig := dict }}
{{- if $v.webhook.url }}
{{- $_ := set $clientConfig "url" (printf "%s%s" (trimSuffix "/" $v.webhook.url) $path) }}
{{- $_ := set $clientConfig "caBundle" $v.webhook.caBundle }}
{{- else }}
{{- $service := dict "name" (include "smll-secrets.webhookServiceName" $root) "namespace" $root.Release.Namespace "path" $path "port" 443 }}
{{- $_ := set $clientConfig "service" $service }}
{{- with get $live $hook.name }}
{{- $_ := set $clientConfig "caBundle" . }}
{{- end }}
{{- end }}
{{- $_ := set $hook "clientConfig" $clientConfig }}
{{- $_ := set $hook "namespaceSelector" $selector }}
{{- $hooks = append $hooks $hook }}
{{- end }}
{{- if not $hooks }}
{{- fail (printf "%s holds no webhook definitions" $file) }}
{{- end }}
{{- toYaml $hooks }}
{{- end }}

{{/* Metadata shared by both configurations. */}}
{{- define "smll-secrets.webhookConfigurationMetadata" -}}
name: {{ include "smll-secrets.webhookConfigurationName" . }}
labels:
  {{- include "smll-secrets.labels" . | nindent 2 }}
{{- if include "smll-secrets.certManager" . }}
annotations:
  # cert-manager's CA injector keeps caBundle equal to the CA of this Certificate.
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "smll-secrets.certificateName" . }}
{{- end }}
{{- end }}
