//! Who may do what: authentication (passwords in the database or an LDAP
//! directory, API tokens, bearer tokens of the token service), the one
//! permission resolver every front-end asks, the token service itself,
//! login throttling and the audit log.

pub mod audit;
pub mod ldap;
pub mod model;
pub mod names;
pub mod password;
pub mod resolver;
pub mod service;
pub mod throttle;
pub mod token;
