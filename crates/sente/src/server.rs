//! [`Server`]: the built server. It derefs to its [`ServerHandle`] (pushes, connected uids,
//! shutdown) and gives the tower service to mount.

use crate::handle::ServerHandle;
use crate::service::ChskService;
use crate::shell::Shell;
use sente_proto::Packer;
use std::sync::Arc;

/// A running Sente server: a cheap, clonable handle. Mount its service with
/// [`Server::router`] (axum) or [`Server::service_at`] (any tower / hyper stack); push to
/// clients through the [`ServerHandle`] it derefs to (`server.send(..)`).
///
/// The server holds its handlers. A handler reaches the server through
/// [`EventMsg::server`](crate::EventMsg::server) (or a captured [`Server::handle`]), which
/// keeps nothing alive in a cycle; a handler that captures the `Server` itself keeps it alive
/// until [`ServerHandle::shutdown`].
#[derive(Clone)]
pub struct Server {
    handle: ServerHandle,
    shell: Arc<Shell>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("packer", &self.shell.packers.default_packer().name())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Server {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Server {
    pub(crate) fn new(handle: ServerHandle, shell: Arc<Shell>) -> Self {
        Server { handle, shell }
    }

    /// The handle alone: pushes, connected uids and shutdown, without the handlers (capture this
    /// in handlers and background tasks).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The service, answering only `mount` (e.g. `/chsk`) and `<mount>/client.js` (404 for any
    /// other path).
    pub fn service_at(&self, mount: &str) -> ChskService {
        ChskService::new(self.shell.clone(), Some(mount))
    }

    /// The service, answering every path it is given (mount it at one path of your router; a
    /// path ending in `/client.js` gets the JavaScript client).
    pub fn service(&self) -> ChskService {
        ChskService::new(self.shell.clone(), None)
    }

    /// The `Host` headers the server answers (serving helpers warn when a server reachable
    /// beyond loopback answers any).
    pub fn allowed_hosts(&self) -> &crate::AllowedHosts {
        &self.shell.guard.allowed_hosts
    }

    /// The default packer (for connections without a `packer` parameter).
    pub fn packer(&self) -> &Arc<dyn Packer> {
        self.shell.packers.default_packer()
    }
}
