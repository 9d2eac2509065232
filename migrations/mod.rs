//! Metadata schema migrations, applied at start and by `dockyard migrate`.
//! Written with sea-query so one definition serves every SQL backend.

use sea_orm_migration::prelude::*;

mod m20261123_000001_registry;
mod m20261123_000002_accounts;
mod m20261123_000003_namespaces;
mod m20261123_000004_legacy;
mod m20261123_000005_aci;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_registry::Migration),
            Box::new(m20261123_000002_accounts::Migration),
            Box::new(m20261123_000003_namespaces::Migration),
            Box::new(m20261123_000004_legacy::Migration),
            Box::new(m20261123_000005_aci::Migration),
        ]
    }
}
