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

{{- /* The username the API server gives the operator's ServiceAccount. */ -}}
{{- define "diloco-operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "diloco-operator.serviceAccountName" .) -}}
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

{{- /*
Labels as the operator's label flags read them: `key=value,key=value` (sorted by key).
*/ -}}
{{- define "diloco-operator.labelFlag" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- /*
The namespaces the operator reconciles, as a JSON list (empty in clusterWide mode). Also the
place where contradictory values fail the install with a message.
*/ -}}
{{- define "diloco-operator.watchNamespaces" -}}
{{- if hasKey .Values "watchNamespace" -}}
{{- fail "values: `watchNamespace` was removed in chart 0.2.0. Use `watchNamespaces: [<namespace>, ...]` (empty: the release namespace only), or `clusterWide: true` for every namespace (what an empty `watchNamespace` meant)." -}}
{{- end -}}
{{- if .Values.clusterWide -}}
{{- if .Values.watchNamespaces -}}
{{- fail "values: `clusterWide: true` reconciles every namespace; leave `watchNamespaces` empty (or set `clusterWide: false` to watch only those namespaces)." -}}
{{- end -}}
{{- list | toJson -}}
{{- else -}}
{{- default (list .Release.Namespace) .Values.watchNamespaces | toJson -}}
{{- end -}}
{{- end -}}

{{- /* The image-name prefixes a DiLoCoServer may run, as a JSON list. */ -}}
{{- define "diloco-operator.allowedImages" -}}
{{- default (list .Values.coordinator.image.repository) .Values.allowedImages | toJson -}}
{{- end -}}

{{- /* The console's objects: `<fullname>-console`. */ -}}
{{- define "diloco-operator.consoleName" -}}
{{- printf "%s-console" (include "diloco-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "diloco-operator.consoleServiceAccountName" -}}
{{- default (include "diloco-operator.consoleName" .) .Values.console.serviceAccount.name -}}
{{- end -}}

{{- define "diloco-operator.consoleSelectorLabels" -}}
app.kubernetes.io/name: diloco-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "diloco-operator.consoleLabels" -}}
{{ include "diloco-operator.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
