{{- define "orgops.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orgops.selectorLabels" -}}
app.kubernetes.io/name: orgops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orgops.labels" -}}
{{ include "orgops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
