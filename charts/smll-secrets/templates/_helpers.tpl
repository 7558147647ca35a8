{{/* Names. */}}
{{- define "smll-secrets.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "smll-secrets.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "smll-secrets.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is needed when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's Service; its DNS names are on the serving certificate. */}}
{{- define "smll-secrets.webhookServiceName" -}}
{{- printf "%s-webhook" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Both webhook configurations have this name; the self-managed webhook keeps their caBundle in step. */}}
{{- define "smll-secrets.webhookConfigurationName" -}}
{{- include "smll-secrets.fullname" . }}
{{- end }}

{{/* The Secret holding the serving certificate: written by the webhook (self-managed) or by cert-manager. */}}
{{- define "smll-secrets.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.certificateName" -}}
{{- printf "%s-webhook" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.leaseName" -}}
{{- printf "%s-controller" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.databaseConfigName" -}}
{{- printf "%s-databases" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "smll-secrets.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Modes. */}}
{{- define "smll-secrets.devMode" -}}
{{- if .Values.webhook.url }}true{{ end }}
{{- end }}

{{- define "smll-secrets.certManager" -}}
{{- if and (not .Values.webhook.url) (eq .Values.webhook.tls.mode "cert-manager") }}true{{ end }}
{{- end }}

{{- define "smll-secrets.selfManagedTLS" -}}
{{- if and (not .Values.webhook.url) (eq .Values.webhook.tls.mode "self-managed") }}true{{ end }}
{{- end }}

{{/* The write-only Secrets API: served by the in-cluster webhook pods (never in development mode). */}}
{{- define "smll-secrets.secretsApi" -}}
{{- if and .Values.secretsApi.enabled (not .Values.webhook.url) }}true{{ end }}
{{- end }}

{{- define "smll-secrets.apiServiceName" -}}
v1alpha1.secrets.smll.io
{{- end }}

{{/* Labels: the full set on every object; the selector labels (a subset that never changes) select pods. */}}
{{- define "smll-secrets.labels" -}}
helm.sh/chart: {{ include "smll-secrets.chart" . }}
{{ include "smll-secrets.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smll-secrets
{{- end }}

{{- define "smll-secrets.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smll-secrets.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Contradicting settings fail the render with a message that says what to change. Included by every template that
depends on the mode, so `helm template --show-only` fails too.
*/}}
{{- define "smll-secrets.validate" -}}
{{- $v := .Values }}
{{- if $v.webhook.url }}
{{- if eq $v.webhook.tls.mode "cert-manager" }}
{{- fail "webhook.url (development mode: the webhook runs outside the cluster) cannot be combined with webhook.tls.mode=cert-manager: cert-manager issues for the in-cluster Service; set webhook.caBundle to the CA of the certificate served at the url instead" }}
{{- end }}
{{- if not (hasPrefix "https://" $v.webhook.url) }}
{{- fail "webhook.url must start with https:// (the API server only calls webhooks over TLS)" }}
{{- end }}
{{- if not $v.webhook.caBundle }}
{{- fail "webhook.url needs webhook.caBundle: the base64 PEM of the CA that signed the certificate served at the url" }}
{{- end }}
{{- else }}
{{- if $v.webhook.caBundle }}
{{- fail "webhook.caBundle is only for webhook.url (development mode); in-cluster the webhook (self-managed TLS) or cert-manager's CA injector fills caBundle" }}
{{- end }}
{{- if and (ne $v.webhook.tls.mode "cert-manager") $v.webhook.tls.certManager.issuerRef }}
{{- fail "webhook.tls.certManager.issuerRef is set but webhook.tls.mode is not cert-manager" }}
{{- end }}
{{- end }}
{{- if and $v.controller.registry.url (not $v.controller.registry.htpasswdSecret.name) }}
{{- fail "controller.registry.url needs controller.registry.htpasswdSecret.name: the Secret the registry reads its users from" }}
{{- end }}
{{- end }}

{{/* `--htpasswd-secret` is NAMESPACE/NAME. */}}
{{- define "smll-secrets.htpasswdSecret" -}}
{{- $s := .Values.controller.registry.htpasswdSecret }}
{{- printf "%s/%s" (default .Release.Namespace $s.namespace) $s.name }}
{{- end }}

{{/* Every container: no privileges, nothing written outside the emptyDirs. */}}
{{- define "smll-secrets.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Pod settings shared by the webhook's Deployment and the controller's own (controller.separate). */}}
{{- define "smll-secrets.podSettings" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
terminationGracePeriodSeconds: {{ .Values.pod.terminationGracePeriodSeconds }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The controller's ServiceAccount: the pod's own, or (controller.separate) one of its own. */}}
{{- define "smll-secrets.controllerServiceAccountName" -}}
{{- if .Values.controller.separate }}
{{- printf "%s-controller" (include "smll-secrets.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "smll-secrets.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* The controller's own Deployment selects its pods by these (the webhook Service must never select them). */}}
{{- define "smll-secrets.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "smll-secrets.name" . }}-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
