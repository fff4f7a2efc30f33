{{/* _helpers.tpl: names, labels, the rendered tp.conf and the checks that refuse a bad release. */}}

{{- define "tp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tp.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tp.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tp.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{/* Where the Secrets are mounted; the chart points the config keys at these files. */}}
{{- define "tp.jwtDir" -}}/etc/tenant-provisioner/jwt{{- end -}}
{{- define "tp.receiptsDir" -}}/etc/tenant-provisioner/receipts{{- end -}}
{{- define "tp.configDir" -}}/etc/tenant-provisioner/config{{- end -}}

{{- define "tp.jwtSecretName" -}}
{{- .Values.secrets.jwt.existingSecret | default (printf "%s-jwt" (include "tp.fullname" .)) -}}
{{- end -}}
{{- define "tp.receiptsSecretName" -}}
{{- .Values.secrets.receipts.existingSecret | default (printf "%s-receipts" (include "tp.fullname" .)) -}}
{{- end -}}

{{/* Keys the chart owns: listen addresses (the probes and Services use them) and key files. */}}
{{- define "tp.managedConfig" -}}
ingress.listen_host: 0.0.0.0
ingress.listen_port: {{ .Values.ingress.port }}
worker.http_listen: 0.0.0.0:{{ .Values.worker.metricsPort }}
jwt.key_file: {{ include "tp.jwtDir" . }}/jwt.key
receipts.signing_key_file: {{ include "tp.receiptsDir" . }}/receipts.key
receipts.keyset_file: {{ include "tp.receiptsDir" . }}/receipts.keyset
{{- end -}}

{{/* One `key = value` line per key, sorted; integers printed as integers. */}}
{{- define "tp.conf" -}}
{{- $managed := include "tp.managedConfig" . | fromYaml -}}
{{- range $k := keys $managed | sortAlpha }}
{{- if hasKey $.Values.config $k }}
{{- fail (printf "config[%q] is set by the chart; remove it from values" $k) }}
{{- end }}
{{- end }}
# tp.conf rendered by the tenant-provisioner chart from .Values.config (+ the keys it owns).
{{- $all := merge (deepCopy $managed) .Values.config }}
{{- range $k := keys $all | sortAlpha }}
{{- $v := get $all $k }}
{{- if and (kindIs "float64" $v) (eq $v (floor $v)) }}
{{ $k }} = {{ int64 $v }}
{{- else }}
{{ $k }} = {{ $v }}
{{- end }}
{{- end }}
{{- end -}}

{{/* worker.shutdown_grace_ms in whole seconds, rounded up. */}}
{{- define "tp.workerGraceSeconds" -}}
{{- $ms := int64 (get .Values.config "worker.shutdown_grace_ms" | default 20000) -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{- define "tp.workerTerminationGrace" -}}
{{- add (include "tp.workerGraceSeconds" . | int64) .Values.worker.terminationExtraSeconds -}}
{{- end -}}

{{/* A release that would misbehave is refused before anything is applied. */}}
{{- define "tp.checks" -}}
{{- $parts := int64 .Values.kafka.requestsPartitions -}}
{{- if gt (int64 .Values.worker.replicas) $parts -}}
{{- fail (printf "worker.replicas (%d) exceeds kafka.requestsPartitions (%d): the extra workers would get no partition" (int64 .Values.worker.replicas) $parts) -}}
{{- end -}}
{{- if and .Values.worker.keda.enabled (gt (int64 .Values.worker.keda.maxReplicas) $parts) -}}
{{- fail (printf "worker.keda.maxReplicas (%d) exceeds kafka.requestsPartitions (%d)" (int64 .Values.worker.keda.maxReplicas) $parts) -}}
{{- end -}}
{{- if lt (int64 .Values.worker.terminationExtraSeconds) 1 -}}
{{- fail "worker.terminationExtraSeconds must be at least 1: terminationGracePeriodSeconds must exceed worker.shutdown_grace_ms" -}}
{{- end -}}
{{- $ingressMin := ternary .Values.ingress.hpa.minReplicas .Values.ingress.replicas .Values.ingress.hpa.enabled | int64 -}}
{{- if and (kindIs "float64" .Values.ingress.pdb.minAvailable) (ge (int64 .Values.ingress.pdb.minAvailable) $ingressMin) -}}
{{- fail (printf "ingress.pdb.minAvailable (%d) must be below the ingress replicas (%d), or no node could ever be drained" (int64 .Values.ingress.pdb.minAvailable) $ingressMin) -}}
{{- end -}}
{{- if and (not .Values.secrets.jwt.existingSecret) (not .Values.secrets.jwt.key) -}}
{{- fail "secrets.jwt: set existingSecret or key" -}}
{{- end -}}
{{- if and (not .Values.secrets.receipts.existingSecret) (or (not .Values.secrets.receipts.signingKey) (not .Values.secrets.receipts.keyset)) -}}
{{- fail "secrets.receipts: set existingSecret, or signingKey and keyset" -}}
{{- end -}}
{{- end -}}

{{/* Env shared by every container: pg.dsn from a Secret when asked. */}}
{{- define "tp.env" -}}
{{- if .Values.pgDsnSecret.name }}
- name: TP_PG_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.pgDsnSecret.name }}
      key: {{ .Values.pgDsnSecret.key | default "dsn" }}
{{- end }}
{{- end -}}
