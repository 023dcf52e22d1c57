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

{{/*
The label selector of shard i of n (docs/architecture.md "Shards"; checked by hack/test.d/10-helm.sh).
*/}}
{{- define "orgops.shardSelector" -}}
{{- $i := index . 0 -}}
{{- $n := index . 1 -}}
{{- if eq $i 0 -}}
{{- $others := list -}}
{{- range $j := untilStep 1 $n 1 }}{{ $others = append $others (toString $j) }}{{ end -}}
orgops.dev/shard notin ({{ join "," $others }})
{{- else -}}
orgops.dev/shard={{ $i }}
{{- end -}}
{{- end }}
