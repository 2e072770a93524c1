{{/*
Shared pieces of the dnsrace templates. Object names are fixed (planner, enactor-a, dynamodb-lb,
dns-etcd, dnsrace-coredns...) because the components and the Fault CRD refer to them by name:
install one lab per namespace.
*/}}

{{- define "dnsrace.labels" -}}
app.kubernetes.io/name: dnsrace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: dnsrace
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- if not .Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "enactor") */}}
{{- define "dnsrace.selector" -}}
app.kubernetes.io/name: dnsrace
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Scrape annotations on a pod template, for a Prometheus that discovers pods (no ServiceMonitor
needed): (dict "port" 8080). docs/metrics.md has the matching scrape config.
*/}}
{{- define "dnsrace.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}

{{- define "dnsrace.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The enactor names, enactor-a .. enactor-<letter>, as a list. */}}
{{- define "dnsrace.enactorNames" -}}
{{- $names := list }}
{{- range $i := until (int .Values.enactors.count) }}
{{- $names = append $names (printf "enactor-%s" (substr $i (add1 $i | int) "abcdefghijklmnopqrstuvwxyz")) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{- define "dnsrace.dnsServer" -}}
{{ printf "dnsrace-coredns.%s.svc.%s:53" .Release.Namespace .Values.dns.clusterDomain }}
{{- end }}

{{- define "dnsrace.dnsEtcd" -}}
{{ printf "dns-etcd.%s.svc.%s:2379" .Release.Namespace .Values.dns.clusterDomain }}
{{- end }}

{{/* Pod and container security: non-root, read-only root, no privilege escalation, no caps. */}}
{{- define "dnsrace.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "dnsrace.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/*
The pod spec of one dnsrace component:
(dict "root" $ "component" "enactor" "name" "enactor-a" "args" (list ...) "serviceAccount" "enactor-a"
      "automountToken" true "resources" .Values.enactors.resources "dnsEtcd" true "readinessPath" "/healthz"
      "extraEnv" (list (dict "name" "DNSRACE_X" "value" "1")))   # extraEnv is optional
*/}}
{{- define "dnsrace.componentPod" -}}
{{- $root := .root -}}
serviceAccountName: {{ .serviceAccount }}
automountServiceAccountToken: {{ .automountToken }}
# SIGTERM reaches dnsrace through tini; kopf and the workers stop within this.
terminationGracePeriodSeconds: 15
securityContext:
  {{- include "dnsrace.podSecurity" (dict "uid" 10001) | nindent 2 }}
containers:
  - name: {{ .component }}
    image: {{ include "dnsrace.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: {{ toJson .args }}
    env:
      - name: DNSRACE_NAMESPACE
        valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
      - name: DNSRACE_POD_NAME
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
      - name: DNSRACE_DNS_SERVER
        value: {{ include "dnsrace.dnsServer" $root | quote }}
      {{- if .dnsEtcd }}
      - name: DNSRACE_DNS_ETCD
        value: {{ include "dnsrace.dnsEtcd" $root | quote }}
      {{- end }}
      - name: DNSRACE_SAFEGUARDS
        value: {{ $root.Values.safeguards | quote }}
      - name: DNSRACE_HTTP_PORT
        value: "8080"
      {{- range .extraEnv }}
      - name: {{ .name }}
        value: {{ .value | quote }}
      {{- end }}
    ports:
      - {name: http, containerPort: 8080, protocol: TCP}
    livenessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: {{ $root.Values.probes.periodSeconds }}
      failureThreshold: {{ $root.Values.probes.livenessFailureThreshold }}
      timeoutSeconds: 2
    readinessProbe:
      httpGet: {path: {{ .readinessPath | default "/healthz" }}, port: http}
      periodSeconds: {{ $root.Values.probes.periodSeconds }}
      failureThreshold: {{ $root.Values.probes.readinessFailureThreshold }}
      timeoutSeconds: 2
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- include "dnsrace.containerSecurity" . | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
volumes:
  # The only writable path: the root filesystem is read-only.
  - name: tmp
    emptyDir: {sizeLimit: 64Mi}
{{- end }}

{{/* host:port of DynamoDB Local, as the LB nodes reach it. */}}
{{- define "dnsrace.dynamodbBackend" -}}
{{ printf "dynamodb-local.%s.svc.%s:8000" .Release.Namespace .Values.dns.clusterDomain }}
{{- end }}

{{/*
The cascade's Services, as the launcher and the NLB reach them (cascade.enabled): DWFM's
GET /leases, the Network Manager's POST /admit, and the instances' host (a headless Service:
its name resolves to the instances pod's own IP, see cascade.yaml).
*/}}
{{- define "dnsrace.serviceHost" -}}
{{ printf "%s.%s.svc.%s" .name .root.Release.Namespace .root.Values.dns.clusterDomain }}
{{- end }}

{{/*
One cascade component as a single-replica Deployment (docs/cascade.md):
(dict "root" $ "component" "dwfm" "args" (list ...) "token" false "resources" ... "dnsEtcd" false)
Recreate: two pods of one component would be two launchers numbering the same requests, two
NLBs writing one record, two DWFMs renewing one fleet, two hosts of the same endpoints.
*/}}
{{- define "dnsrace.cascadeDeployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "dnsrace.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels:
      {{- include "dnsrace.selector" (dict "root" .root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "dnsrace.labels" .root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        {{- include "dnsrace.scrapeAnnotations" (dict "port" 8080) | nindent 8 }}
    spec:
      {{- include "dnsrace.componentPod" (dict "root" .root "component" .component "args" .args
            "serviceAccount" .component "automountToken" .token "resources" .resources
            "dnsEtcd" .dnsEtcd) | nindent 6 }}
{{- end }}
