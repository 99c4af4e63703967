{{/* The release's base name: the release name, with "docrelay" added when it lacks it. */}}
{{- define "docrelay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "docrelay" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-docrelay" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are shared by every tenant: their names carry the namespace. */}}
{{- define "docrelay.clusterName" -}}
{{- printf "docrelay.%s.%s" .Release.Namespace (include "docrelay.fullname" .) | trunc 253 -}}
{{- end -}}

{{/* The keys namespace: where the private sealing keys live (docs/secrets.md), never the
     namespace tenant users work in. sealing.keysNamespace, else <release namespace>-docrelay-keys
     (the operator's and the gateway's own default). */}}
{{- define "docrelay.keysNamespace" -}}
{{- $name := .Values.sealing.keysNamespace | default (printf "%s-docrelay-keys" .Release.Namespace) -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "the keys namespace %s is longer than 63 characters: set sealing.keysNamespace" $name) -}}
{{- end -}}
{{- if eq $name .Release.Namespace -}}
{{- fail "sealing.keysNamespace must not be the release namespace: whoever may read Secrets there would open every sealed value" -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "docrelay.clusterMode" -}}
{{- if eq .Values.mode "cluster" }}true{{ end -}}
{{- end -}}

{{/* The webhook configurations' name: the operator's builders/sealing.py
     webhook_configuration_name() gives the same (it updates them by this name). */}}
{{- define "docrelay.webhookConfigName" -}}
{{- if eq .Values.mode "cluster" }}docrelay-secrets{{ else }}docrelay-secrets.{{ .Release.Namespace }}{{ end -}}
{{- end -}}

{{/* The conversation-turns admission policy and its binding (cluster-scoped, like the
     webhook configurations: the namespace in the name in tenant mode). */}}
{{- define "docrelay.turnPolicyName" -}}
{{- if eq .Values.mode "cluster" }}docrelay-conversation-turns{{ else }}docrelay-conversation-turns.{{ .Release.Namespace }}{{ end -}}
{{- end -}}

{{- define "docrelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: docrelay
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "docrelay.selectorLabels" -}}
app.kubernetes.io/name: docrelay
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "docrelay.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The restricted pod and container security context every docrelay pod gets. */}}
{{- define "docrelay.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "docrelay.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The part every sealing webhook shares (templates/webhooks.yaml). */}}
{{- define "docrelay.webhookCommon" -}}
rules:
  - apiGroups: ["docrelay.io"]
    apiVersions: ["v1alpha1"]
    resources: ["integrationsecrets"]
    operations: ["CREATE", "UPDATE"]
    scope: Namespaced
matchPolicy: Equivalent
sideEffects: None
admissionReviewVersions: ["v1"]
timeoutSeconds: 10
{{- if ne .Values.mode "cluster" }}
# Tenant mode: only this release's namespace; other tenants have their own configurations.
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The plaintext webhooks (seal, refuse): called only for objects carrying plaintext, so
     sealed secrets apply even while the operator is down; then plaintext is refused. */}}
{{- define "docrelay.webhookPlaintextOnly" -}}
matchConditions:
  - name: has-plaintext-value
    expression: has(object.spec) && has(object.spec.value)
# The operator down: plaintext is refused, never stored.
failurePolicy: Fail
{{- end }}

{{/* Where run pods reach the broker (the gateway Service), unless runs.brokerUrl says. */}}
{{- define "docrelay.brokerUrl" -}}
{{- if .Values.runs.brokerUrl -}}
{{- .Values.runs.brokerUrl -}}
{{- else -}}
{{- printf "http://%s-gateway.%s.svc:%v" (include "docrelay.fullname" .) .Release.Namespace .Values.gateway.service.port -}}
{{- end -}}
{{- end -}}

{{/* Where run pods reach the egress proxy (the gateway Service), unless runs.egressProxyUrl
     says. */}}
{{- define "docrelay.egressProxyUrl" -}}
{{- if .Values.runs.egressProxyUrl -}}
{{- .Values.runs.egressProxyUrl -}}
{{- else -}}
{{- printf "http://%s-gateway.%s.svc:%v" (include "docrelay.fullname" .) .Release.Namespace .Values.gateway.service.proxyPort -}}
{{- end -}}
{{- end -}}

{{/* cert-manager mode: the serving Certificate (and its Secret) of the webhooks. */}}
{{- define "docrelay.webhookCertName" -}}
{{- printf "%s-webhook" (include "docrelay.fullname" .) -}}
{{- end -}}

{{/* The operator writes the CA bundle into the webhook configurations itself, unless
     cert-manager's CA injector does (certManager.enabled). */}}
{{- define "docrelay.operatorRegistersWebhooks" -}}
{{- if not .Values.certManager.enabled }}true{{ end -}}
{{- end -}}

{{/* cert-manager mode: its CA injector writes the serving certificate's CA into the webhook
     configurations (cainjector reads the Certificate's Secret). */}}
{{- define "docrelay.webhookAnnotations" -}}
{{- if .Values.certManager.enabled -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "docrelay.webhookCertName" .) }}
{{- end -}}
{{- end -}}
