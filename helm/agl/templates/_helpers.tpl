{{/* ---------------------------------------------------------------- names ---- */}}

{{- define "agl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Component names. The vLLM Service is "<fullname>-llm", never "vllm": a Service named
vllm makes Kubernetes inject VLLM_PORT=tcp://..., which vLLM reads as its own setting. */}}
{{- define "agl.store.fullname" -}}{{ include "agl.fullname" . }}-store{{- end -}}
{{- define "agl.agentops.fullname" -}}{{ include "agl.fullname" . }}-agentops{{- end -}}
{{- define "agl.llm.fullname" -}}{{ include "agl.fullname" . }}-llm{{- end -}}

{{- define "agl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- labels --- */}}

{{/* agl.labels: (dict "ctx" $ "component" "store") */}}
{{- define "agl.labels" -}}
helm.sh/chart: {{ include "agl.chart" .ctx }}
{{ include "agl.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: agl
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "agl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- images --- */}}

{{/* agl.image: (dict "image" .Values.x.image "ctx" $) */}}
{{- define "agl.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* agl.pullSecrets: (dict "ctx" $ "secrets" .Values.x.imagePullSecrets) */}}
{{- define "agl.pullSecrets" -}}
{{- $all := concat .ctx.Values.imagePullSecrets .secrets | uniq -}}
{{- if $all }}
imagePullSecrets:
{{- range $all }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- URLs ----- */}}

{{- define "agl.svcHost" -}}
{{- printf "%s.%s.svc.%s" .name .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* The store's base URL as the other components reach it. */}}
{{- define "agl.storeUrl" -}}
{{- if .Values.store.enabled -}}
{{- printf "http://%s:%d" (include "agl.svcHost" (dict "name" (include "agl.store.fullname" .) "ctx" .)) (int .Values.store.service.port) -}}
{{- else -}}
{{- required "store.externalUrl is required when store.enabled is false and AgentOps forwards to the store or vLLM is enabled" .Values.store.externalUrl | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{- define "agl.agentopsUrl" -}}
{{- printf "http://%s:%d" (include "agl.svcHost" (dict "name" (include "agl.agentops.fullname" .) "ctx" .)) (int .Values.agentops.service.port) -}}
{{- end -}}

{{- define "agl.llmUrl" -}}
{{- printf "http://%s:%d" (include "agl.svcHost" (dict "name" (include "agl.llm.fullname" .) "ctx" .)) (int .Values.vllm.service.port) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- env ------ */}}

{{/* Downward-API variables used in OTEL_RESOURCE_ATTRIBUTES. */}}
{{- define "agl.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* agl.otelEnv: (dict "ctx" $ "otel" .Values.x.otel) — the standard OTEL_* variables. */}}
{{- define "agl.otelEnv" -}}
{{- $g := .ctx.Values.otel -}}
- name: OTEL_SERVICE_NAME
  value: {{ .otel.serviceName | quote }}
{{- $attrs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "service.version=%s" .ctx.Chart.AppVersion) -}}
{{- range $k, $v := $g.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- if and .otel.enabled $g.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $g.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $g.sampler | quote }}
{{- with $g.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* agl.logEnv: (dict "ctx" $ "level" .Values.x.logLevel) */}}
{{- define "agl.logEnv" -}}
- name: AGL_LOG_LEVEL
  value: {{ default .ctx.Values.logging.level .level | quote }}
- name: AGL_LOG_FORMAT
  value: {{ .ctx.Values.logging.format | quote }}
{{- end -}}

{{/* ---------------------------------------------------------------- misc ----- */}}

{{/* agl.pvcSpec: (dict "p" persistence-values) — spec of a created claim. */}}
{{- define "agl.pvcSpec" -}}
accessModes:
{{- toYaml .p.accessModes | nindent 2 }}
{{- if .p.storageClass }}
{{- if eq "-" .p.storageClass }}
storageClassName: ""
{{- else }}
storageClassName: {{ .p.storageClass | quote }}
{{- end }}
{{- end }}
resources:
  requests:
    storage: {{ .p.size | quote }}
{{- end -}}

{{/* agl.preStop: seconds → a lifecycle block (nothing for 0). The sleep action needs no
binary in the image (distroless images have no shell). */}}
{{- define "agl.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int . }}
{{- end }}
{{- end -}}

{{/* vLLM: tensor parallel size and the startup probe's failureThreshold. */}}
{{- define "agl.vllm.tp" -}}
{{- if gt (int .Values.vllm.tensorParallelSize) 0 -}}{{ int .Values.vllm.tensorParallelSize }}{{- else -}}{{ int .Values.vllm.gpu.count }}{{- end -}}
{{- end -}}

{{- define "agl.vllm.startupFailureThreshold" -}}
{{- $budget := mul (int .Values.vllm.startup.budgetMinutes) 60 -}}
{{- $period := int .Values.vllm.startup.periodSeconds -}}
{{- div (add $budget (sub $period 1)) $period -}}
{{- end -}}

{{/* The `vllm serve` arguments, the same in both modes (the model is positional, as
`vllm serve <model>` wants it). */}}
{{- define "agl.vllm.args" -}}
{{- $v := .Values.vllm -}}
- {{ $v.model | quote }}
- --host
- {{ ternary "127.0.0.1" $v.official.host (eq $v.mode "launcher") | quote }}
- --port
- {{ $v.internalPort | quote }}
{{- with $v.servedModelName }}
- --served-model-name
- {{ . | quote }}
{{- end }}
{{- with $v.revision }}
- --revision
- {{ . | quote }}
{{- end }}
- --tensor-parallel-size
- {{ include "agl.vllm.tp" . | quote }}
{{- if gt (int $v.maxModelLen) 0 }}
- --max-model-len
- {{ $v.maxModelLen | quote }}
{{- end }}
{{- if not (kindIs "invalid" $v.gpuMemoryUtilization) }}
- --gpu-memory-utilization
- {{ $v.gpuMemoryUtilization | quote }}
{{- end }}
{{- if $v.drain.passShutdownTimeoutFlag }}
- --shutdown-timeout
- {{ $v.drain.shutdownTimeoutSeconds | quote }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------ validation --- */}}
{{/* Cross-field rules the JSON schema cannot express; each fails the render with the
values that broke it. */}}
{{- define "agl.validate" -}}
{{- $s := .Values.store -}}
{{- $a := .Values.agentops -}}
{{- $v := .Values.vllm -}}
{{- if $s.enabled }}
{{- if le (int $s.terminationGracePeriodSeconds) (add (int $s.preStopSleepSeconds) (int $s.shutdownGraceSeconds)) }}
{{- fail (printf "store.terminationGracePeriodSeconds (%d) must be greater than store.preStopSleepSeconds (%d) + store.shutdownGraceSeconds (%d)" (int $s.terminationGracePeriodSeconds) (int $s.preStopSleepSeconds) (int $s.shutdownGraceSeconds)) }}
{{- end }}
{{- if and (ne $s.storage.backend "sqlite") $s.persistence.existingClaim }}
{{- fail (printf "store.persistence.existingClaim is set but store.storage.backend is %s: choose sqlite to use the claim" $s.storage.backend) }}
{{- end }}
{{- if eq $s.storage.backend "postgres" }}
{{- $p := $s.postgres }}
{{- $sources := 0 }}
{{- if $p.existingSecret.name }}{{ $sources = add1 $sources }}{{ end }}
{{- if $p.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if $p.cnpg.create }}{{ $sources = add1 $sources }}{{ end }}
{{- if ne (int $sources) 1 }}
{{- fail "store.storage.backend is postgres: set exactly one of store.postgres.existingSecret.name (production: a Secret with the URL, e.g. CloudNativePG's <cluster>-app), store.postgres.url (development) or store.postgres.cnpg.create" }}
{{- end }}
{{- if and $s.pdb.enabled (ge (int $s.pdb.minAvailable) (int $s.replicas)) }}
{{- fail (printf "store.pdb.minAvailable (%d) must be below store.replicas (%d), or no node could ever be drained" (int $s.pdb.minAvailable) (int $s.replicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.otel.endpoint $s.enabled $s.otel.enabled }}
{{- $e := lower .Values.otel.endpoint }}
{{- $self := list (printf "//%s" (include "agl.store.fullname" .)) ":4747" }}
{{- range $self }}
{{- if contains . $e }}
{{- fail (printf "otel.endpoint (%s) points at the store itself: the store's request spans would feed its own /v1/traces. Point it at a collector, or set store.otel.enabled=false" $.Values.otel.endpoint) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $a.enabled }}
{{- if le (int $a.terminationGracePeriodSeconds) (add (int $a.drainSeconds) (int $a.shutdownGraceSeconds)) }}
{{- fail (printf "agentops.terminationGracePeriodSeconds (%d) must be greater than agentops.drainSeconds (%d) + agentops.shutdownGraceSeconds (%d)" (int $a.terminationGracePeriodSeconds) (int $a.drainSeconds) (int $a.shutdownGraceSeconds)) }}
{{- end }}
{{- end }}
{{- if $v.enabled }}
{{- $need := add (int $v.drain.preStopSleepSeconds) (int $v.drain.shutdownTimeoutSeconds) (int $v.proxy.shutdownBudgetSeconds) }}
{{- if le (int $v.terminationGracePeriodSeconds) $need }}
{{- fail (printf "vllm.terminationGracePeriodSeconds (%d) must be greater than vllm.drain.preStopSleepSeconds (%d) + vllm.drain.shutdownTimeoutSeconds (%d) + vllm.proxy.shutdownBudgetSeconds (%d) = %d" (int $v.terminationGracePeriodSeconds) (int $v.drain.preStopSleepSeconds) (int $v.drain.shutdownTimeoutSeconds) (int $v.proxy.shutdownBudgetSeconds) $need) }}
{{- end }}
{{- if gt (int (include "agl.vllm.tp" .)) (int $v.gpu.count) }}
{{- fail (printf "vllm.tensorParallelSize (%d) is larger than vllm.gpu.count (%d): each replica needs one GPU per tensor-parallel rank" (int $v.tensorParallelSize) (int $v.gpu.count)) }}
{{- end }}
{{- if and $v.hfToken.existingSecret $v.hfToken.value }}
{{- fail "vllm.hfToken: set existingSecret or value, not both" }}
{{- end }}
{{- if and $v.pdb.enabled (not (kindIs "invalid" $v.pdb.minAvailable)) (not (kindIs "invalid" $v.pdb.maxUnavailable)) }}
{{- fail "vllm.pdb: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if eq (int $v.internalPort) 8000 }}
{{- fail "vllm.internalPort must not be 8000: the proxy listens there" }}
{{- end }}
{{- if and (gt (int $v.replicas) 1) $v.modelCache.enabled (not $v.modelCache.existingClaim) (has "ReadWriteOnce" $v.modelCache.accessModes) (eq 1 (len $v.modelCache.accessModes)) }}
{{- fail (printf "vllm.replicas is %d but the created model cache claim is ReadWriteOnce: use modelCache.accessModes [ReadWriteMany], an existingClaim, or modelCache.enabled=false" (int $v.replicas)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of agl-vllm's proxy (the sidecar, or the launcher container). */}}
{{- define "agl.llm.proxyEnv" -}}
{{- $v := .Values.vllm -}}
{{ include "agl.podEnv" . }}
- name: AGL_STORE_URL
  value: {{ default (include "agl.storeUrl" .) $v.storeUrl | trimSuffix "/" | quote }}
{{- if .Values.auth.existingSecret }}
# The shared key: agents send it as their OpenAI api_key; exports to the store carry it.
- name: AGL_STORE_KEY_FILE
  value: {{ include "agl.keyFile" . }}
{{- end }}
{{- include "agl.authEnv" . }}
{{ include "agl.logEnv" (dict "ctx" . "level" $v.logLevel) }}
{{ include "agl.otelEnv" (dict "ctx" . "otel" $v.otel) }}
{{- with $v.proxy.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Secret and key holding the store's Postgres URL: the one given, or the `-app`
Secret of the CloudNativePG Cluster the chart renders (its `uri` key); empty with a
plain URL. Rendered as YAML for fromYaml. */}}
{{- define "agl.store.pgSecret" -}}
{{- $p := .Values.store.postgres -}}
{{- if $p.existingSecret.name -}}
name: {{ $p.existingSecret.name }}
key: {{ $p.existingSecret.key }}
{{- else if $p.cnpg.create -}}
name: {{ include "agl.store.fullname" . }}-pg-app
key: uri
{{- end -}}
{{- end }}

{{/* ---------------------------------------------------------------- keys ----- */}}

{{/* Where every component reads the shared and admin keys: files from the Secrets, never a
value in the pod spec. */}}
{{- define "agl.keyFile" -}}/run/secrets/agl-key/key{{- end -}}
{{- define "agl.adminKeyFile" -}}/run/secrets/agl-admin-key/key{{- end -}}

{{/* agl.authEnv: the key variables of a component that requires keys. */}}
{{- define "agl.authEnv" -}}
{{- $a := .Values.auth -}}
{{- if $a.existingSecret }}
- name: AGL_KEY_FILE
  value: {{ include "agl.keyFile" . }}
{{- end }}
{{- if $a.adminExistingSecret }}
- name: AGL_ADMIN_KEY_FILE
  value: {{ include "agl.adminKeyFile" . }}
{{- end }}
{{- if $a.metricsRequireKey }}
- name: AGL_METRICS_REQUIRE_KEY
  value: "true"
{{- end }}
{{- end -}}

{{/* agl.authMounts: the Secret volumes' mounts (read-only). */}}
{{- define "agl.authMounts" -}}
{{- $a := .Values.auth -}}
{{- if $a.existingSecret }}
- name: agl-key
  mountPath: /run/secrets/agl-key
  readOnly: true
{{- end }}
{{- if $a.adminExistingSecret }}
- name: agl-admin-key
  mountPath: /run/secrets/agl-admin-key
  readOnly: true
{{- end }}
{{- end -}}

{{/* agl.authVolumes: the Secrets as volumes, only the key's item, group-readable. */}}
{{- define "agl.authVolumes" -}}
{{- $a := .Values.auth -}}
{{- if $a.existingSecret }}
- name: agl-key
  secret:
    secretName: {{ $a.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $a.secretKey }}
        path: key
{{- end }}
{{- if $a.adminExistingSecret }}
- name: agl-admin-key
  secret:
    secretName: {{ $a.adminExistingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $a.adminSecretKey }}
        path: key
{{- end }}
{{- end -}}
