//! Rules a running processor reads per batch and a handle replaces while it runs: the
//! filter's conditions, the attributes processor's actions and redaction.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// The rules of one built processor: set when the processor is built, read by its
/// consumer per batch (a read lock and a pointer copy), replaced through its handle.
#[derive(Debug)]
pub(crate) struct LiveRules<T>(Mutex<Option<Arc<RwLock<Arc<T>>>>>);

impl<T> Default for LiveRules<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T> LiveRules<T> {
    /// The processor is built with `rules`: the cell its consumer reads.
    pub(crate) fn install(&self, rules: T) -> Arc<RwLock<Arc<T>>> {
        let cell = Arc::new(RwLock::new(Arc::new(rules)));
        *self.0.lock() = Some(Arc::clone(&cell));
        cell
    }

    /// Replace the rules of the built processor; `false` if it is not built.
    pub(crate) fn replace(&self, rules: T) -> bool {
        match self.0.lock().as_ref() {
            Some(cell) => {
                *cell.write() = Arc::new(rules);
                true
            }
            None => false,
        }
    }
}
