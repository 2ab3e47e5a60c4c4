//! axum glue (feature `axum`, on by default).

use crate::server::Server;

impl Server {
    /// An `axum::Router` serving Sente at `path` (e.g. `/chsk`) and the JavaScript client at
    /// `<path>/client.js`. Merge it into your app: `app.merge(server.router("/chsk"))`.
    ///
    /// Serve with [`sente::serve`](crate::serve) (safe timeouts and caps for a public port) or
    /// `axum::serve` (both enable the connection upgrades WebSockets need).
    pub fn router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let path = path.trim_end_matches('/');
        let svc = self.service_at(path);
        axum::Router::new()
            .route_service(path, svc.clone())
            .route_service(&format!("{path}/client.js"), svc)
    }
}
