//! A registry of compositions by id.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Composition, CompositionError, CompositionSource};

/// Compositions by id: how an embedding service registers its own Rust
/// compositions and serves them from its own worker binary.
#[derive(Default, Clone)]
pub struct Registry {
    compositions: BTreeMap<String, Arc<dyn Composition>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a composition under its id.
    ///
    /// # Errors
    /// [`CompositionError::DuplicateId`] if the id is taken.
    pub fn register<C: Composition + 'static>(
        &mut self,
        composition: C,
    ) -> Result<(), CompositionError> {
        self.register_arc(Arc::new(composition))
    }

    /// Adds a shared composition under its id.
    ///
    /// # Errors
    /// [`CompositionError::DuplicateId`] if the id is taken.
    pub fn register_arc(
        &mut self,
        composition: Arc<dyn Composition>,
    ) -> Result<(), CompositionError> {
        let id = composition.id().to_owned();
        if self.compositions.contains_key(&id) {
            return Err(CompositionError::DuplicateId { id });
        }
        self.compositions.insert(id, composition);
        Ok(())
    }

    /// A registry with Montage's built-in compositions
    /// ([`crate::builtin::TestPattern`]).
    pub fn with_builtins() -> Self {
        let mut r = Registry::new();
        r.compositions.insert(
            crate::builtin::TEST_PATTERN_ID.to_owned(),
            Arc::new(crate::builtin::TestPattern::new()),
        );
        r
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("ids", &self.compositions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CompositionSource for Registry {
    fn ids(&self) -> Vec<String> {
        self.compositions.keys().cloned().collect()
    }

    fn composition(&self, id: &str) -> Result<Arc<dyn Composition>, CompositionError> {
        self.compositions
            .get(id)
            .cloned()
            .ok_or_else(|| CompositionError::UnknownComposition {
                id: id.to_owned(),
                available: self.ids(),
            })
    }
}
