//! What every handler can reach: the registry core, the auth service (none
//! on a standalone hub), and the audit writer.

use std::sync::Arc;

use crate::auth::audit::Auditor;
use crate::auth::service::Auth;
use crate::registry::Registry;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// `None` when `[dockyard] standalone = true`: everything is allowed.
    pub auth: Option<Arc<Auth>>,
    pub audit: Auditor,
}
