//! `crd`, `versions` and `storage`: where `Controller::crd` gets the CustomResourceDefinition
//! from. The three keys are read one by one and combined once all are known.

use syn::{Error, LitStr, Path};

use super::errors::Errors;

/// Where `Controller::crd` gets the CustomResourceDefinition from.
pub(crate) enum CrdSource {
    /// `CustomResourceExt::crd()` of the resource (the default).
    Derived,
    /// `crd = false`: a built-in kind or a resource defined elsewhere.
    None,
    /// `versions = [..], storage = ".."`: one CRD per version type, merged.
    Merged {
        versions: Vec<Path>,
        storage: LitStr,
    },
}

/// The three keys as they were read.
#[derive(Default)]
pub(super) struct CrdKeys {
    /// `crd = true|false`.
    pub(super) crd: Option<bool>,
    /// `versions = [..]`, with the `versions` key itself, to point at it.
    pub(super) versions: Option<(Path, Vec<Path>)>,
    /// `storage = ".."`.
    pub(super) storage: Option<LitStr>,
}

impl CrdKeys {
    /// The source the keys describe; conflicting or incomplete keys are recorded in `errors`.
    pub(super) fn source(self, errors: &mut Errors) -> CrdSource {
        let Some((key, versions)) = self.versions else {
            if let Some(storage) = &self.storage {
                errors.push(Error::new_spanned(
                    storage,
                    "`storage` picks the stored version among `versions = [..]`: add `versions` or remove `storage`",
                ));
            }
            return if self.crd == Some(false) {
                CrdSource::None
            } else {
                CrdSource::Derived
            };
        };
        if self.crd == Some(false) {
            errors.push(Error::new_spanned(
                &key,
                "`versions` builds the CRD from its versions, but `crd = false` says there is none: remove one of the two",
            ));
        }
        if versions.is_empty() {
            errors.push(Error::new_spanned(
                &key,
                "`versions` lists no type: name one type per version, e.g. `versions = [v1alpha1::Widget, v1::Widget]`",
            ));
        }
        match self.storage {
            Some(storage) => CrdSource::Merged { versions, storage },
            None => {
                errors.push(Error::new_spanned(
                    &key,
                    "`versions` needs `storage = \"<version>\"`: the version the API server stores, e.g. `storage = \"v1\"`",
                ));
                CrdSource::Derived
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::attrs::tests::{errors, parse, text};

    #[test]
    fn derived_unless_told_otherwise() {
        assert!(matches!(
            parse(quote!(resource = Widget)).crd,
            CrdSource::Derived
        ));
        assert!(matches!(
            parse(quote!(resource = ConfigMap, crd = false)).crd,
            CrdSource::None
        ));
        assert!(matches!(
            parse(quote!(crd = true, resource = Widget)).crd,
            CrdSource::Derived
        ));
        match parse(quote!(
            resource = v1::Widget,
            versions = [v1alpha1::Widget, v1::Widget],
            storage = "v1"
        ))
        .crd
        {
            CrdSource::Merged { versions, storage } => {
                assert_eq!(
                    versions.iter().map(text).collect::<Vec<_>>(),
                    ["v1alpha1 :: Widget", "v1 :: Widget"]
                );
                assert_eq!(storage.value(), "v1");
            }
            _ => panic!("expected merged versions"),
        }
    }

    #[test]
    fn versions_and_storage_go_together() {
        let needs_storage = "`versions` needs `storage = \"<version>\"`: the version the API server stores, e.g. `storage = \"v1\"`";
        assert_eq!(
            errors(quote!(resource = Widget, versions = [v1::Widget])),
            [needs_storage]
        );
        assert_eq!(
            errors(quote!(resource = Widget, storage = "v1")),
            [
                "`storage` picks the stored version among `versions = [..]`: add `versions` or remove `storage`"
            ]
        );
        assert_eq!(
            errors(quote!(
                resource = Widget,
                crd = false,
                versions = [v1::Widget],
                storage = "v1"
            )),
            [
                "`versions` builds the CRD from its versions, but `crd = false` says there is none: remove one of the two"
            ]
        );
        assert_eq!(
            errors(quote!(resource = Widget, versions = [], storage = "v1")),
            [
                "`versions` lists no type: name one type per version, e.g. `versions = [v1alpha1::Widget, v1::Widget]`"
            ]
        );
    }
}
