//! Example operators built with bonny-rs. Each module is one whole operator (resource,
//! controller, reconcile logic); each binary in `src/bin/` runs one of them, and each has an
//! end-to-end test in `tests/` on a real etcd + kube-apiserver.
//!
//! | example | binary | shows |
//! |---|---|---|
//! | [`hello`] | `hello-operator` | a namespaced resource that yields a ConfigMap and a status (Bonny's classic) |
//! | [`workload`] | `workload-operator` | a `WebApp` owning a Deployment and a Service: readiness from the Deployment's status, drift repaired |
//! | [`cluster`] | `cluster-operator` | a cluster-scoped `SharedConfig` copied into namespaces without owner references; a finalizer deletes the copies |
//! | [`versions`] | `versions-operator` | one resource served as `v1alpha1` and `v1` from Rust types, stored as `v1` |
//! | [`snapshot`] | `snapshot-operator` | a `Snapshot` copies a ConfigMap it does not own into versioned children and prunes all but the newest `keep` |

pub mod cluster;
pub mod hello;
pub mod snapshot;
pub mod versions;
pub mod workload;
