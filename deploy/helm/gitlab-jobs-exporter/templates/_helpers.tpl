{{- define "gitlab-jobs-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gitlab-jobs-exporter.fullname" -}}
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

{{- define "gitlab-jobs-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitlab-jobs-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gitlab-jobs-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gitlab-jobs-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gitlab-jobs-exporter.secretName" -}}
{{- if .Values.gitlab.existingSecret }}
{{- .Values.gitlab.existingSecret }}
{{- else }}
{{- include "gitlab-jobs-exporter.fullname" . }}
{{- end }}
{{- end }}

{{- define "gitlab-jobs-exporter.secretKey" -}}
{{- if .Values.gitlab.existingSecret }}
{{- .Values.gitlab.existingSecretKey }}
{{- else -}}
token
{{- end }}
{{- end }}

{{- define "gitlab-jobs-exporter.webhookSecretName" -}}
{{- if .Values.webhook.existingSecret }}
{{- .Values.webhook.existingSecret }}
{{- else }}
{{- include "gitlab-jobs-exporter.fullname" . }}-webhook
{{- end }}
{{- end }}

{{- define "gitlab-jobs-exporter.webhookSecretKey" -}}
{{- if .Values.webhook.existingSecret }}
{{- .Values.webhook.existingSecretKey }}
{{- else -}}
secret
{{- end }}
{{- end }}

{{/* "true" when shards forward webhook events to each other: they then need stable DNS names
of their own, from a headless Service (the StatefulSet's serviceName). */}}
{{- define "gitlab-jobs-exporter.peers" -}}
{{- if and .Values.webhook.enabled (gt (int .Values.shards) 1) -}}
true
{{- end }}
{{- end }}

{{- define "gitlab-jobs-exporter.peersService" -}}
{{- include "gitlab-jobs-exporter.fullname" . | trunc 57 | trimSuffix "-" }}-peers
{{- end }}

{{/* config.toml, from the values. Strings and numbers are written as JSON, which TOML reads
(a JSON string is a TOML basic string: backslashes and quotes in regexes are escaped alike). */}}
{{- define "gitlab-jobs-exporter.config" -}}
{{- if not (or .Values.projects .Values.groups .Values.discovery.membership) }}
{{- fail "nothing to watch: set projects (path or id), groups (path or id) or discovery.membership=true" }}
{{- end -}}
# Rendered by the gitlab-jobs-exporter Helm chart from its values.
[gitlab]
url = {{ .Values.gitlab.url | toJson }}
token_file = "/var/run/secrets/gitlab-jobs-exporter/token"
timeout = {{ .Values.gitlab.timeout | toJson }}
max_requests_per_minute = {{ .Values.gitlab.maxRequestsPerMinute | toJson }}

[server]
listen = "0.0.0.0:39129"

[poll]
interval = {{ .Values.poll.interval | toJson }}
max_interval = {{ .Values.poll.maxInterval | toJson }}
backfill = {{ .Values.poll.backfill | toJson }}
concurrency = {{ .Values.poll.concurrency | int64 }}

[labels]
ref = {{ .Values.labels.ref | toJson }}
job = {{ .Values.labels.job | toJson }}
runner = {{ .Values.labels.runner | toJson }}
drop = {{ .Values.labels.drop | default list | toJson }}
{{- with .Values.labels.jobRewrites }}
job_rewrites = [
{{- range . }}
  { match = {{ .match | toJson }}, replace = {{ .replace | toJson }} },
{{- end }}
]
{{- end }}

[limits]
max_series = {{ .Values.limits.maxSeries | int64 }}
{{- if or .Values.metrics.durationBuckets .Values.metrics.queuedBuckets }}

[metrics]
{{- with .Values.metrics.durationBuckets }}
duration_buckets = {{ toJson . }}
{{- end }}
{{- with .Values.metrics.queuedBuckets }}
queued_buckets = {{ toJson . }}
{{- end }}
{{- end }}
{{- if gt (int .Values.shards) 1 }}

# Each pod of the StatefulSet takes its ordinal as shard.index.
[shard]
count = {{ .Values.shards | int64 }}
{{- end }}

[state]
dir = "/var/lib/gitlab-jobs-exporter"
{{- if .Values.webhook.enabled }}

# POST /webhook on its own port; the secret is the environment's GITLAB_WEBHOOK_SECRET.
[webhook]
enabled = true
listen = {{ printf "0.0.0.0:%d" (int .Values.webhook.port) | toJson }}
reconcile_interval = {{ .Values.webhook.reconcileInterval | toJson }}
{{- if include "gitlab-jobs-exporter.peers" . }}
# An event for another shard's project goes to that shard's pod ({shard}: its ordinal).
peer_url = {{ printf "http://%s-{shard}.%s.%s.svc:%d/webhook" (include "gitlab-jobs-exporter.fullname" .) (include "gitlab-jobs-exporter.peersService" .) .Release.Namespace (int .Values.webhook.port) | toJson }}
{{- end }}
{{- end }}

[discovery]
membership = {{ .Values.discovery.membership | toJson }}
include = {{ .Values.discovery.include | default list | toJson }}
exclude = {{ .Values.discovery.exclude | default list | toJson }}
archived = {{ .Values.discovery.archived | toJson }}
interval = {{ .Values.discovery.interval | toJson }}
grace_period = {{ .Values.discovery.gracePeriod | toJson }}
{{- range .Values.projects }}

[[projects]]
{{- if .path }}
path = {{ .path | toJson }}
{{- else }}
id = {{ .id | int64 }}
{{- end }}
{{- end }}
{{- range .Values.groups }}

[[groups]]
{{- if .path }}
path = {{ .path | toJson }}
{{- else }}
id = {{ .id | int64 }}
{{- end }}
include_subgroups = {{ ternary .includeSubgroups true (hasKey . "includeSubgroups") | toJson }}
{{- end }}
{{- end }}
