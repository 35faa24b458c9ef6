//! `cargo bonny control-plane`: the directory of the local control plane's binaries.

use bonny::testing::Binaries;

use crate::error::Error;

/// Find or build etcd, kube-apiserver, kube-controller-manager and kubectl (progress on
/// stderr), then print their directory on stdout.
pub fn control_plane() -> Result<(), Error> {
    let binaries = Binaries::locate().map_err(Error::ControlPlane)?;
    println!("{}", binaries.dir().display());
    Ok(())
}
