{{/* The controller container: the webhook's sidecar, or alone in its own Deployment (controller.separate). */}}
{{- define "smll-secrets.controllerContainer" -}}
- name: controller
  image: {{ include "smll-secrets.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - controller
    - --namespace={{ .Release.Namespace }}
    - --identity=$(POD_NAME)
    - --lease-name={{ include "smll-secrets.leaseName" . }}
    - --lease-seconds={{ .Values.controller.leaseSeconds }}
    - --settle-seconds={{ .Values.controller.settleSeconds }}
    - --settle-max-seconds={{ .Values.controller.settleMaxSeconds }}
    - --workers={{ .Values.controller.workers }}
    - --metrics-port={{ .Values.controller.metricsPort }}
    - --log-level={{ .Values.logLevel }}
    - --log-format={{ .Values.logFormat }}
    {{- if .Values.controller.databases.servers }}
    - --database-config=/etc/smll-secrets/databases.yaml
    {{- end }}
    {{- if .Values.controller.registry.url }}
    - --registry-url={{ .Values.controller.registry.url }}
    - --htpasswd-secret={{ include "smll-secrets.htpasswdSecret" . }}
    {{- end }}
    {{- if include "smll-secrets.registryTokens" . }}
    {{- $tokens := .Values.controller.registry.tokens }}
    - --registry-token-port={{ $tokens.port }}
    - --registry-token-ca={{ .Release.Namespace }}/{{ include "smll-secrets.registryTokenCA" . }}
    - --registry-token-issuer={{ $tokens.issuer }}
    - --registry-token-seconds={{ $tokens.lifetimeSeconds }}
    {{- with $tokens.service }}
    - --registry-token-service={{ . }}
    {{- end }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
  ports:
    - name: metrics
      containerPort: {{ .Values.controller.metricsPort }}
      protocol: TCP
    {{- if include "smll-secrets.registryTokens" . }}
    - name: tokens
      containerPort: {{ .Values.controller.registry.tokens.port }}
      protocol: TCP
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: 10
    failureThreshold: 6
  resources:
    {{- toYaml .Values.controller.resources | nindent 4 }}
  securityContext:
    {{- include "smll-secrets.containerSecurity" . | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if .Values.controller.databases.servers }}
    - name: databases
      mountPath: /etc/smll-secrets
      readOnly: true
    {{- end }}
{{- end }}
