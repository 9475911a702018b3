{{/* The chart's name, truncated to a DNS label. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's object name prefix. */}}
{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "ferry.labels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (destination or source). */}}
{{- define "ferry.selector" -}}
app.kubernetes.io/name: {{ include "ferry.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* metadata: name, labels, annotations and owner references of an object. */}}
{{- define "ferry.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "ferry.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (default (dict) .annotations) .root.Values.commonAnnotations }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.ownerReferences }}
ownerReferences:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding this side's credentials. */}}
{{- define "ferry.secretName" -}}
{{- if .root.Values.credentials.existingSecret -}}
{{- .root.Values.credentials.existingSecret -}}
{{- else -}}
{{- printf "%s-%s" .root.Values.credentials.name .side -}}
{{- end -}}
{{- end -}}

{{/* The pod securityContext of the chosen security mode, merged with podSecurityContext. */}}
{{- define "ferry.podSecurityContext" -}}
{{- $base := dict -}}
{{- if eq .Values.securityMode "elevated" -}}
{{- $base = dict "runAsUser" 0 "runAsGroup" 0 "runAsNonRoot" false "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- else -}}
{{- $base = dict "runAsUser" 65532 "runAsGroup" 65532 "runAsNonRoot" true "fsGroup" 65532 "fsGroupChangePolicy" "OnRootMismatch" "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- end -}}
{{- toYaml (mergeOverwrite $base .Values.podSecurityContext) -}}
{{- end -}}

{{/* The container securityContext of the chosen security mode. */}}
{{- define "ferry.containerSecurityContext" -}}
{{- $caps := dict "drop" (list "ALL") -}}
{{- if eq .Values.securityMode "elevated" -}}
{{- $caps = dict "drop" (list "ALL") "add" (list "CHOWN" "FOWNER" "DAC_OVERRIDE" "SETGID") -}}
{{- end -}}
{{- $base := dict "allowPrivilegeEscalation" false "privileged" false "readOnlyRootFilesystem" true "capabilities" $caps -}}
{{- toYaml (mergeOverwrite $base .Values.containerSecurityContext) -}}
{{- end -}}

{{/* Pod-level placement and metadata shared by every pod. The service account token is
mounted only for a pod that calls the API (`apiToken`: the destination with snapshot: csi). */}}
{{- define "ferry.podSpecCommon" -}}
serviceAccountName: {{ include "ferry.serviceAccountName" . }}
automountServiceAccountToken: {{ .apiToken | default false }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "ferry.podSecurityContext" . | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Pod template labels and annotations. */}}
{{- define "ferry.podMetadata" -}}
labels:
  {{- include "ferry.selector" (dict "root" .root "component" .component) | nindent 2 }}
  {{- with .root.Values.commonLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) .root.Values.podAnnotations .root.Values.commonAnnotations }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Volumes every ferry container needs: credentials and an in-memory /tmp. */}}
{{- define "ferry.baseVolumes" -}}
- name: identity
  secret:
    secretName: {{ include "ferry.secretName" (dict "root" .root "side" .side) }}
    defaultMode: 0440
    items:
      - {key: ca.pem, path: ca.pem}
      - {key: cert.pem, path: cert.pem}
      - {key: key.pem, path: key.pem}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}

{{/* The destination's serve containers as a JSON list of {name}: one per module, or the one
     of batch mode. Container i listens on basePort+i and httpBasePort+i. */}}
{{- define "ferry.destinationSlots" -}}
{{- if .Values.destination.batch.enabled -}}
{{- list (dict "name" "batch") | toJson -}}
{{- else -}}
{{- .Values.destination.modules | toJson -}}
{{- end -}}
{{- end -}}
