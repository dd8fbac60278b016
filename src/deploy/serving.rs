//! How a target hands its instances to the serving sets, without knowing them: `route`
//! (`dataplane::AppPort`) implements [`Serving`] for an app's port, the targets call it. A leaf, so `route` and the
//! targets do not import each other.

use std::net::SocketAddr;

use futures_util::future::BoxFuture;

/// Where a target puts the instances that serve the app's traffic.
pub trait Serving: Sync {
    /// Points the app's port and host at these instances (the serving set), replacing the
    /// last set at once.
    fn serve<'a>(&'a self, addresses: &'a [SocketAddr]) -> BoxFuture<'a, Result<(), String>>;
    /// Resolves once no request is in flight on these instances (ones that just left the
    /// serving set), or when the drain timeout is over.
    fn drained(&self, addresses: &[SocketAddr]) -> BoxFuture<'static, ()>;
}

pub type Publish<'a> = &'a dyn Serving;
