//! Authentication and authorization, black-box against a real `dockyard
//! web` with `[dockyard] standalone = false`: the authorization matrix
//! over HTTP (`auth/matrix.rs`), bearer tokens (`auth/tokens.rs`), login
//! throttling (`auth/throttle.rs`), the `/uam` administration API
//! (`auth/uam.rs`) and the docker CLI against a private dockerd
//! (`auth/docker.rs`). The conformance suite with auth on is in
//! `tests/conformance.rs` (`auth_*`).

mod common;

#[path = "auth/hub.rs"]
mod hub;

#[path = "auth/docker.rs"]
mod docker;
#[path = "auth/matrix.rs"]
mod matrix;
#[path = "auth/throttle.rs"]
mod throttle;
#[path = "auth/tokens.rs"]
mod tokens;
#[path = "auth/uam.rs"]
mod uam;

// The private dockerd of the real-client tests (`tests/clients.rs`).
#[allow(dead_code)]
#[path = "clients/dockerd.rs"]
mod dockerd;
#[allow(dead_code)]
#[path = "clients/support.rs"]
mod support;
