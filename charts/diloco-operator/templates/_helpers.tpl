{{- define "diloco-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "diloco-operator.serviceAccountName" -}}
{{- default (include "diloco-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "diloco-operator.selectorLabels" -}}
app.kubernetes.io/name: diloco-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "diloco-operator.labels" -}}
{{ include "diloco-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
