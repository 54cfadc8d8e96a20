//! The cross-component tests, as one test binary (cargo's "testsuite" layout): libtorch and the
//! rest of the dependency graph are linked once instead of once per file, and every test that
//! needs a Kubernetes control plane shares one (`LocalCluster::shared`, started by the first
//! such test and taken down when this process exits). Each test works in namespaces of its own
//! and installs only namespaced or release-named objects, so they can share it.
//!
//! Run one module or one test by name filter, e.g.
//! `cargo test -p diloco-tests --test integration coordinator_tls::` or `… cel`.
//!
//! The real-node tests are a binary of their own (`tests/real_node/`): they need root and a
//! kubelet, and one test at a time.

// On a real kube-apiserver + etcd (+ kube-controller-manager), shared by these modules
// (kubectl_diloco runs the plugin binary against it).
mod admission_policy;
mod admission_policy_rbac;
mod console;
mod console_browser;
mod crd_on_api_server;
// The Grafana dashboard against a real coordinator's and a real operator's /metrics.
mod grafana_dashboard;
mod kubectl_diloco;
mod operator_console;
mod operator_on_api_server;
mod operator_rbac;
mod tenant_boundary;

// Real coordinator processes over loopback: training, faults, authentication, roles, TLS,
// hostile and bad input (torch.save archives too), the bulk plane, forgather's protocol details, work-unit dispatch and
// run statistics.
mod coordinator_audit;
mod coordinator_auth;
mod coordinator_bad_input;
mod coordinator_bulk;
mod coordinator_faults;
mod coordinator_hostile;
mod coordinator_parity;
mod coordinator_roles;
mod coordinator_tls;
mod coordinator_torch_save;
mod coordinator_training;
mod coordinator_work_units;

// A real headless Chromium (Debian's, through chromedriver): the harness the console's tests use.
mod browser;

// No server at all: the chart as rendered, and how binaries find libtorch.
mod helm_chart;
mod helm_chart_console;
mod libtorch_runtime;
mod upload_refusals;
