{{/* Names, labels and the paths every template shares. */}}

{{- define "ktls-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ktls-sidecar.fullname" -}}
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

{{- define "ktls-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ktls-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ktls-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ktls-sidecar.labels" -}}
helm.sh/chart: {{ include "ktls-sidecar.chart" . }}
{{ include "ktls-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ktls-sidecar
{{- end }}

{{/* image: repository@digest when a digest is set, else repository:tag with the tag defaulting to
the chart's appVersion. Call with (list IMAGE ROOT). */}}
{{- define "ktls-sidecar.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "ktls-sidecar.handoffSocket" -}}
{{- printf "%s/%s" .Values.sockets.handoffDir .Values.sockets.handoff }}
{{- end }}

{{- define "ktls-sidecar.controlSocket" -}}
{{- printf "%s/%s" .Values.sockets.controlDir .Values.sockets.control }}
{{- end }}

{{/* The agent's uid: 0 with tlsModuleAutoload (NET_ADMIN reaches only root), else 10001. */}}
{{- define "ktls-sidecar.agentUid" -}}
{{- if .Values.agent.tlsModuleAutoload }}0{{ else }}10001{{ end }}
{{- end }}

{{/* The app's uid, from app.securityContext (or the pod's), for --handoff_allowed_uids. */}}
{{- define "ktls-sidecar.appUid" -}}
{{- $sc := .Values.app.securityContext | default dict }}
{{- $psc := .Values.podSecurityContext | default dict }}
{{- int (default (default 10002 $psc.runAsUser) $sc.runAsUser) }}
{{- end }}

{{/* True ("true") when a PodMonitor is rendered: asked for, and the API exists. */}}
{{- define "ktls-sidecar.podMonitor" -}}
{{- if and .Values.metrics.enabled .Values.metrics.podMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor") }}true{{ end }}
{{- end }}
