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

{{- define "diloco-operator.labels" -}}
app.kubernetes.io/name: diloco-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
