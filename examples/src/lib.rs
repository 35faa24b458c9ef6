//! Example operators built with bonny-rs. Each module is one whole operator (resource,
//! controller, reconcile logic); each binary in `src/bin/` runs one of them.
//!
//! | example | shows |
//! |---|---|
//! | [`hello`] | a namespaced resource that yields a ConfigMap and a status (Bonny's classic) |

pub mod hello;
