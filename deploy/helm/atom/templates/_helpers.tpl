{{/* The release's base name: "atom" when the release is called atom (or contains it). */}}
{{- define "atom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "atom.secretName" -}}
{{- .Values.secret.existingSecret | default (include "atom.fullname" .) -}}
{{- end -}}

{{- define "atom.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Labels of one component; call with (dict "root" $ "component" "api"). */}}
{{- define "atom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atom.fullname" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "atom.labels" -}}
{{ include "atom.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: atom
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* What every ATOM container shares: image, settings (ConfigMap + Secret), hardening. */}}
{{- define "atom.container" -}}
image: {{ include "atom.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "atom.fullname" . }}-config
  - secretRef:
      name: {{ include "atom.secretName" . }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{- define "atom.podSpec" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "atom.volumeMounts" -}}
volumeMounts:
  - name: data
    mountPath: {{ .Values.config.ATOM_DATA_DIR | default "/var/lib/atom" }}
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "atom.volumes" -}}
volumes:
  - name: data
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- end -}}

{{/* Pods roll when the settings the chart made change (envFrom is read only at start). */}}
{{- define "atom.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
{{- if not .Values.secret.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}
