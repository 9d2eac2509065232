//! HTTP front-ends. Each parses requests into domain types and calls the
//! registry core or the auth service; none touches storage or metadata
//! directly.

pub mod aci;
pub mod auth;
pub mod error;
pub mod metrics;
pub mod p2p;
pub mod state;
pub mod uam;
pub mod v1;
pub mod v2;

use axum::Router;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{any, get};

use state::AppState;

/// The whole HTTP surface of the hub.
pub fn router(state: AppState) -> Router {
    let v2 = Router::new()
        .route("/v2", get(v2::base).fallback(v2::base_not_allowed))
        .route("/v2/", get(v2::base).fallback(v2::base_not_allowed))
        .route("/v2/{*rest}", any(v2::dispatch))
        .layer(axum::middleware::map_response(api_version));
    Router::new()
        .merge(v2)
        .merge(uam::router())
        .merge(v1::router())
        // appc ACIs; also the fallback: discovery pages at any other path.
        .merge(aci::router(&state))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .route("/_p2p/info", get(p2p::info))
        .with_state(state)
}

/// Every v2 answer, errors included, names the API version.
async fn api_version(mut r: Response) -> Response {
    r.headers_mut()
        .insert(v2::API_VERSION, HeaderValue::from_static("registry/2.0"));
    r
}
