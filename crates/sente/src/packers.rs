//! The packer registry: the server's default packer and one shared instance per packer name, so
//! that a batch is packed once per packer (a batch's pack cache is keyed by packer instance).

use sente_proto::Packer;
use std::sync::{Arc, Mutex, PoisonError};

/// A `packer` parameter that names no packer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownPacker(pub(crate) String);

impl std::fmt::Display for UnknownPacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name: String = self.0.chars().take(64).collect();
        write!(
            f,
            "Unknown packer {name:?}: the `packer` parameter must be one of edn, transit, json, msgpack (optionally with +gzip)"
        )
    }
}

pub(crate) struct Packers {
    default: Arc<dyn Packer>,
    named: Mutex<Vec<Arc<dyn Packer>>>,
}

impl Packers {
    pub(crate) fn new(default: Arc<dyn Packer>) -> Self {
        Packers {
            default,
            named: Mutex::new(Vec::new()),
        }
    }

    /// The packer for connections without a `packer` parameter.
    pub(crate) fn default_packer(&self) -> &Arc<dyn Packer> {
        &self.default
    }

    /// The packer a request asks for (`packer` parameter), else the default.
    pub(crate) fn resolve(&self, name: Option<&str>) -> Result<Arc<dyn Packer>, UnknownPacker> {
        let Some(name) = name else {
            return Ok(self.default.clone());
        };
        if name == self.default.name() {
            return Ok(self.default.clone());
        }
        let mut named = self.named.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = named.iter().find(|p| p.name() == name) {
            return Ok(p.clone());
        }
        let p = sente_proto::packer::by_name(name).ok_or_else(|| UnknownPacker(name.to_owned()))?;
        // Aliases (names that differ from the packer's own) are not cached.
        if p.name() == name {
            named.push(p.clone());
        }
        Ok(p)
    }
}
