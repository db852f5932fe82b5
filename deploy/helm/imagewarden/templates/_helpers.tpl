{{/* Labels of every object. */}}
{{- define "imagewarden.labels" -}}
app.kubernetes.io/name: imagewarden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: imagewarden
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels that select the operator's pods. They leave out app.kubernetes.io/instance
on purpose: a Deployment's selector cannot change, so adding it would break `helm upgrade`
of releases installed before, and object names are fixed (one release per cluster). */}}
{{- define "imagewarden.selectorLabels" -}}
app.kubernetes.io/name: imagewarden
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator image. */}}
{{- define "imagewarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Name of the Secret holding the webhook token, and its key. */}}
{{- define "imagewarden.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default "imagewarden-webhook-token" }}
{{- end }}
{{- define "imagewarden.webhookSecretKey" -}}
{{- if .Values.webhook.existingSecret }}{{ .Values.webhook.existingSecretKey | default "token" }}{{ else }}token{{ end }}
{{- end }}
