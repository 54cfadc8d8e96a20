# The real node of `scripts/local-cluster up --node`: containerd, kubelet, kube-proxy,
# kube-router (NetworkPolicies), CoreDNS (pods), local-path-provisioner and kube-scheduler beside
# the control plane. Sourced by scripts/local-cluster; see docs/local-node.md.
#
# Everything lives under DIR/node and in namespaces the script creates, so two clusters coexist
# and `down` leaves nothing behind:
# - one network namespace and one mount namespace, held by a `diloco-node-namespace` process:
#   containerd, kubelet, kube-proxy and kube-router run inside both, so pod networking, iptables
#   rules and every mount (container rootfs, volumes, a tmpfs over /run) die with the namespace.
#   The namespace has no route off the machine: no packet can leave it.
# - scripts/netns-forward bridges the namespace and the host's loopback: node -> apiserver on the
#   apiserver's own port (and on NODE_IP for pods, through the `kubernetes` Service), and
#   apiserver -> kubelet on 127.0.0.1 (logs, exec, port-forward).
# - a cgroup root /diloco-<id> in every hierarchy: the node's processes in <root>/node, pods in
#   <root>/kubepods (the kubelet's cgroupRoot), so `down` finds and stops exactly them.

NODE_IP=10.200.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
# Host sysctls the kubelet writes (global, not per network namespace): shielded by files
# bind-mounted over them inside the node's mount namespace.
SHIELDED_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

node_paths() {
    NODE=$DIR/node
    NODE_ID=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
    CGROUP_ROOT=diloco-$NODE_ID
    CONTAINERD_SOCK=$NODE/containerd.sock
}

# The node's name resolves to a loopback address, where the apiserver finds the kubelet
# (through the forwarder): the machine's hostname when it does, else localhost.
node_name() {
    local name address
    name=$(hostname | tr '[:upper:]' '[:lower:]')
    address=$(getent ahostsv4 "$name" 2>/dev/null | awk 'NR == 1 {print $1}')
    if [[ $address != 127.* ]]; then
        name=localhost
        address=127.0.0.1
    fi
    printf '%s %s\n' "$name" "$address"
}

# node_start NAME COMMAND...: like start, inside the node's cgroup and namespaces.
node_start() {
    local name=$1
    shift
    (
        node_cgroup_join "$BASHPID"
        exec setsid nsenter --target "$(cat "$NODE/namespace.pid")" --net --mount -- "$@"
    ) </dev/null >"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
    disown $!
}

# node_start_on_host NAME COMMAND...: like start (the host's namespaces), inside the node's
# cgroup, so `down` finds it even without its PID file.
node_start_on_host() {
    local name=$1
    shift
    (
        node_cgroup_join "$BASHPID"
        exec setsid "$@"
    ) </dev/null >"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
    disown $!
}

# node_exec COMMAND...: runs COMMAND in the node's namespaces and waits for it.
node_exec() {
    nsenter --target "$(cat "$NODE/namespace.pid")" --net --mount -- "$@"
}

cgroup_hierarchies() {
    awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts
}

node_cgroups_create() {
    local hierarchy
    while read -r hierarchy; do
        mkdir -p "$hierarchy/$CGROUP_ROOT/node"
        # cgroup v1 cpuset children start empty; give them the parent's CPUs and memory nodes.
        if [[ -f $hierarchy/cpuset.cpus ]]; then
            local dir
            for dir in "$hierarchy/$CGROUP_ROOT" "$hierarchy/$CGROUP_ROOT/node"; do
                cat "$(dirname "$dir")/cpuset.cpus" >"$dir/cpuset.cpus"
                cat "$(dirname "$dir")/cpuset.mems" >"$dir/cpuset.mems"
            done
        fi
    done < <(cgroup_hierarchies)
}

node_cgroup_join() {
    local pid=$1 hierarchy
    while read -r hierarchy; do
        [[ -d $hierarchy/$CGROUP_ROOT/node ]] && echo "$pid" >"$hierarchy/$CGROUP_ROOT/node/cgroup.procs"
    done < <(cgroup_hierarchies)
}

# Every process under the node's cgroup root (the node's own and its containers').
node_cgroup_pids() {
    local procs=/sys/fs/cgroup/pids/$CGROUP_ROOT
    [[ -d $procs ]] || procs=$(cgroup_hierarchies | head -n 1)/$CGROUP_ROOT
    [[ -d $procs ]] || return 0
    find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null
}

node_certificates() {
    local pki=$DIR/pki
    issue_leaf "$pki" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
    issue_leaf "$pki" kube-proxy "/CN=system:kube-proxy"
    issue_leaf "$pki" kube-scheduler "/CN=system:kube-scheduler"
    issue_leaf "$pki" kube-router "/CN=diloco:kube-router"
    issue_leaf "$pki" local-path-provisioner "/CN=diloco:local-path-provisioner"
    local user
    for user in kubelet kube-proxy kube-scheduler kube-router local-path-provisioner; do
        write_kubeconfig "$NODE/$user.kubeconfig" "$user" "$SERVER" "$pki"
    done
}

node_write_configs() {
    mkdir -p "$NODE/cni/net.d" "$NODE/cni/ipam" "$NODE/var-lib-cni" "$NODE/var-log-containers" \
        "$NODE/sysctl" "$NODE/kubelet" "$NODE/pod-logs" "$NODE/local-path"
    cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCK"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE_PAUSE"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
EOF
    cat >"$NODE/cni/net.d/10-diloco.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "diloco",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: $NODE/pod-logs
rotateCertificates: false
serverTLSBootstrap: false
# Images cannot be pulled again here: never garbage-collect them; evict only when nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
shutdownGracePeriod: 0s
# A mounted Secret follows its object on the pod's next sync: 10 s instead of the default
# minute, so a rotated token reaches worker pods well inside a short rotationGracePeriod.
syncFrequency: 10s
EOF
    cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $NODE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
nodePortAddresses: [primary]
clusterCIDR: $CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack limits are global (not per network namespace): leave the host's alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 30s, minSyncPeriod: 0s}
EOF
}

# The namespace holder: creates the network namespace (loopback with NODE_IP,
# no route off the machine) and the mount namespace (tmpfs over /run, node-local /var/lib/cni and
# /var/log/containers, shielded sysctls), then sleeps until `down`.
NAMESPACE_SETUP='
set -eu
node=$1 node_ip=$2 service_cidr=$3
shift 3
ip link set lo up
# The node address lives on the namespace loopback (not every kernel has dummy interfaces).
ip addr add "$node_ip/32" dev lo
# A route for Service IPs, so connections the node itself opens to a ClusterIP reach the
# DNAT of kube-proxy (locally sent packets need a route before NAT); nothing leaves the machine.
ip route add "$service_cidr" dev lo src "$node_ip"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
mount -t tmpfs -o mode=0755 diloco-node-run /run
mount --bind "$node/var-lib-cni" /var/lib/cni
mount --bind "$node/var-log-containers" /var/log/containers
for sysctl in "$@"; do
    file=$node/sysctl/${sysctl//\//.}
    cat "/proc/sys/$sysctl" >"$file"
    mount --bind "$file" "/proc/sys/$sysctl"
done
touch "$node/namespace.ready"
exec -a "diloco-node-namespace $node" sleep infinity
'

node_namespace_up() {
    # Mount points for the node-local directories (empty on the host, as on any node).
    mkdir -p /var/lib/cni /var/log/containers
    (
        node_cgroup_join "$BASHPID"
        exec setsid unshare --net --mount --propagation slave -- \
            bash -c "$NAMESPACE_SETUP" diloco-node-namespace "$NODE" "$NODE_IP" "$SERVICE_CIDR" \
            "${SHIELDED_SYSCTLS[@]}"
    ) </dev/null >"$DIR/node-namespace.log" 2>&1 &
    echo $! >"$NODE/namespace.pid"
    disown $!
    cp "$NODE/namespace.pid" "$DIR/node-namespace.pid"
    wait_for "the node's namespaces" 10 node-namespace test -f "$NODE/namespace.ready"
    ln -sfn "/proc/$(cat "$NODE/namespace.pid")/ns/net" "$NODE/netns"
}

node_kubectl() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

# Objects the node's add-ons need: identities for kube-router and the provisioner, the
# `kubernetes` Service's endpoint (the forwarder on NODE_IP), CoreDNS, the storage class.
node_apply_addons() {
    node_kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "diloco:kube-router"}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "diloco:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "diloco:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "diloco:kube-router"}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: diloco-local-cluster}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $API_PORT, protocol: TCP}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # No forward plugin: names outside the cluster get no answer, no query leaves the machine.
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $IMAGE_COREDNS
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
        livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        resources: {requests: {cpu: 50m, memory: 40Mi}, limits: {memory: 170Mi}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
---
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "diloco:local-path-provisioner"}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "diloco:local-path-provisioner"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "diloco:local-path-provisioner"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "diloco:local-path-provisioner"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: "diloco:local-path-provisioner", namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "diloco:local-path-provisioner", namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: "diloco:local-path-provisioner"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "diloco:local-path-provisioner"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
    cat >"$NODE/local-path-config.json" <<EOF
{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$NODE/local-path"]}]}
EOF
    cat >"$NODE/local-path-helper-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: helper-pod}
spec:
  priorityClassName: system-node-critical
  tolerations: [{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}]
  containers:
  - name: helper-pod
    image: $IMAGE_HELPER
    imagePullPolicy: Never
EOF
}

node_node_ready() {
    [[ $(node_kubectl get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

node_up() {
    ((EUID == 0)) || die "--node needs root (network and mount namespaces, cgroups, iptables)"
    "$REPO_ROOT/scripts/bootstrap" node >/dev/null
    # The node's own images (pause, CoreDNS, the provisioner's helper), built once and cached.
    local images
    images=$("$REPO_ROOT/scripts/images" node-archives) || die "could not build the node's images"
    IMAGE_PAUSE=$(sed -n 's/^pause //p' <<<"$images" | cut -d' ' -f1)
    IMAGE_COREDNS=$(sed -n 's/^coredns //p' <<<"$images" | cut -d' ' -f1)
    IMAGE_HELPER=$(sed -n 's/^helper //p' <<<"$images" | cut -d' ' -f1)
    local bin=$NODE_DIR/bin
    node_paths
    read -r NODE_NAME NODE_ADDRESS < <(node_name)
    KUBELET_PORT=$(free_ports 1)
    say "real node $NODE_NAME (network namespace with $NODE_IP, cgroup /$CGROUP_ROOT)"
    mkdir -p "$NODE"
    echo "$NODE_NAME" >"$NODE/name"
    node_certificates
    node_write_configs
    node_cgroups_create
    node_namespace_up

    node_start_on_host netns-forward "$REPO_ROOT/scripts/netns-forward" \
        "$NODE/netns" "127.0.0.1:$API_PORT" host "127.0.0.1:$API_PORT" \
        "$NODE/netns" "$NODE_IP:$API_PORT" host "127.0.0.1:$API_PORT" \
        host "$NODE_ADDRESS:$KUBELET_PORT" "$NODE/netns" "127.0.0.1:$KUBELET_PORT"
    wait_for "the namespace forwarder" 10 netns-forward grep -q listening "$DIR/netns-forward.log"

    # RBAC, the kubernetes endpoint and the add-ons first: kube-router and CoreDNS start with
    # their permissions in place.
    node_apply_addons

    node_start containerd containerd --config "$NODE/containerd.toml"
    wait_for "containerd" 20 containerd ctr --address "$CONTAINERD_SOCK" version
    local name archive
    while read -r name _ archive; do
        ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --snapshotter overlayfs "$archive" >/dev/null \
            || die "could not import $archive into the node's containerd"
    done <<<"$images"

    node_start_on_host kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig "$NODE/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig "$NODE/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$NODE/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$(free_ports 1)" --leader-elect=false

    # DILOCO_NODE_KUBELET: another kubelet binary (a patched build to try; the tests use one
    # that cannot start, to show that `up` then fails with its log).
    node_start kubelet "${DILOCO_NODE_KUBELET:-$bin/kubelet}" --config "$NODE/kubelet.yaml" \
        --kubeconfig "$NODE/kubelet.kubeconfig" --root-dir "$NODE/kubelet" --cert-dir "$NODE/kubelet/pki" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
    node_start kube-proxy "$bin/kube-proxy" --config "$NODE/kube-proxy.yaml"

    node_start_on_host local-path-provisioner "$LOCAL_PATH_PROVISIONER_DIR/bin/local-path-provisioner" start \
        --kubeconfig "$NODE/local-path-provisioner.kubeconfig" --namespace local-path-storage \
        --config "$NODE/local-path-config.json" --helper-pod-file "$NODE/local-path-helper-pod.yaml" \
        --helper-image "$IMAGE_HELPER" --service-account-name local-path-provisioner-service-account

    wait_for "the node to be Ready" 40 kubelet node_node_ready
    # kube-router looks its Node up once at start: only now does it exist.
    node_start kube-router "$KUBE_ROUTER_DIR/bin/kube-router" --kubeconfig "$NODE/kube-router.kubeconfig" \
        --hostname-override "$NODE_NAME" --run-firewall=true --run-router=false --run-service-proxy=false \
        --enable-cni=false --enable-ipv6=false --service-cluster-ip-range "$SERVICE_CIDR" \
        --health-port 20244 --metrics-port 0
    wait_for "kube-proxy" 20 kube-proxy node_exec curl -sf http://127.0.0.1:10256/healthz
    wait_for "kube-router" 30 kube-router node_exec curl -sf http://127.0.0.1:20244/healthz
    check_alive kube-scheduler
    check_alive local-path-provisioner
    wait_for "CoreDNS" 40 kubelet node_coredns_ready
    say "node $NODE_NAME Ready; DNS $CLUSTER_DNS_IP; default StorageClass local-path"
}

node_coredns_ready() {
    [[ $(node_kubectl -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null) == 1 ]]
}

# our_pid NAME: the PID in DIR/NAME.pid if that process is still ours (its command line names DIR).
our_pid() {
    local name=$1 pid
    [[ -f $DIR/$name.pid ]] || return 1
    pid=$(cat "$DIR/$name.pid")
    [[ $pid == "$$" || $pid == "$PPID" ]] && return 1
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$DIR" || return 1
    echo "$pid"
}

# stop_processes NAME...: SIGTERM to all at once, up to 10 s, then SIGKILL.
stop_processes() {
    local name pid pids=()
    for name in "$@"; do
        pid=$(our_pid "$name") && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    local deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# Stops the node: its components, then every process left in its cgroups (containers, shims,
# the namespace holder, whose exit frees the network and mount namespaces with all their rules
# and mounts), then removes the cgroups.
node_down() {
    [[ -d $DIR/node ]] || return 0
    node_paths
    # The kubelet first, so it restarts nothing; then the others together.
    stop_processes kubelet
    stop_processes local-path-provisioner kube-scheduler kube-router kube-proxy containerd netns-forward
    local deadline=$((SECONDS + 15)) pids
    while pids=$(node_cgroup_pids) && [[ -n $pids ]]; do
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        ((SECONDS < deadline)) || {
            printf 'warning: processes left in cgroup /%s: %s\n' "$CGROUP_ROOT" "$pids" >&2
            break
        }
        sleep 0.1
    done
    local hierarchy
    while read -r hierarchy; do
        [[ -d $hierarchy/$CGROUP_ROOT ]] || continue
        find "$hierarchy/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done < <(cgroup_hierarchies)
}
