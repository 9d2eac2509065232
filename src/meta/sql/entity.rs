//! sea-orm entities for the tables `migrations/` creates.

pub mod repositories {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "repositories")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub namespace: String,
        pub is_public: bool,
        pub comment: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod blobs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "blobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub size: i64,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod repo_blobs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "repo_blobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub repo: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod manifests {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "manifests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub repo: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub media_type: String,
        pub body: Vec<u8>,
        pub size: i64,
        pub subject: Option<String>,
        pub artifact_type: Option<String>,
        pub annotations: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod manifest_refs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "manifest_refs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub repo: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub manifest: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub target: String,
        pub is_manifest: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tags {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub repo: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub digest: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

macro_rules! entity {
    ($module:ident, $table:literal, { $($(#[$attr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        pub mod $module {
            use sea_orm::entity::prelude::*;

            #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                $($(#[$attr])* pub $field: $ty,)*
            }

            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

entity!(users, "users", {
    #[sea_orm(primary_key, auto_increment = false)]
    name: String,
    email: Option<String>,
    password_hash: String,
    realname: Option<String>,
    comment: Option<String>,
    role: i16,
    source: String,
    created_at: i64,
    updated_at: i64,
});

entity!(organizations, "organizations", {
    #[sea_orm(primary_key, auto_increment = false)]
    name: String,
    email: Option<String>,
    comment: Option<String>,
    url: Option<String>,
    location: Option<String>,
    member_privilege: i16,
    created_at: i64,
});

entity!(org_members, "org_members", {
    #[sea_orm(primary_key, auto_increment = false)]
    org: String,
    #[sea_orm(primary_key, auto_increment = false)]
    user: String,
    role: i16,
});

entity!(teams, "teams", {
    #[sea_orm(primary_key, auto_increment = false)]
    org: String,
    #[sea_orm(primary_key, auto_increment = false)]
    name: String,
    comment: Option<String>,
});

entity!(team_members, "team_members", {
    #[sea_orm(primary_key, auto_increment = false)]
    org: String,
    #[sea_orm(primary_key, auto_increment = false)]
    team: String,
    #[sea_orm(primary_key, auto_increment = false)]
    user: String,
    role: i16,
});

entity!(team_repos, "team_repos", {
    #[sea_orm(primary_key, auto_increment = false)]
    org: String,
    #[sea_orm(primary_key, auto_increment = false)]
    team: String,
    #[sea_orm(primary_key, auto_increment = false)]
    repo: String,
    permit: i16,
});

entity!(api_tokens, "api_tokens", {
    #[sea_orm(primary_key, auto_increment = false)]
    id: String,
    user: String,
    name: String,
    secret_hash: String,
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
});

entity!(audit_events, "audit_events", {
    #[sea_orm(primary_key)]
    id: i64,
    at: i64,
    actor: String,
    action: String,
    repo: Option<String>,
    target: Option<String>,
    detail: Option<String>,
    addr: Option<String>,
    count: i64,
});

entity!(namespaces, "namespaces", {
    #[sea_orm(primary_key, auto_increment = false)]
    name: String,
    kind: i16,
});

/// `namespaces.kind` values.
pub mod namespace_kind {
    pub const USER: i16 = 1;
    pub const ORGANIZATION: i16 = 2;
}

entity!(legacy_images, "legacy_images", {
    #[sea_orm(primary_key, auto_increment = false)]
    id: String,
    json: Vec<u8>,
    parent: Option<String>,
    ancestry: String,
    layer_digest: Option<String>,
    layer_size: Option<i64>,
    checksum: Option<String>,
    complete: bool,
    push_repo: Option<String>,
    created_at: i64,
});

entity!(legacy_layers, "legacy_layers", {
    #[sea_orm(primary_key, auto_increment = false)]
    digest: String,
    diff_id: String,
    media_type: String,
});

entity!(legacy_conversions, "legacy_conversions", {
    #[sea_orm(primary_key, auto_increment = false)]
    manifest: String,
    image: String,
    media_type: String,
    body: Vec<u8>,
});

entity!(legacy_image_manifests, "legacy_image_manifests", {
    #[sea_orm(primary_key, auto_increment = false)]
    image: String,
    manifest: String,
});

entity!(legacy_repo_images, "legacy_repo_images", {
    #[sea_orm(primary_key, auto_increment = false)]
    repo: String,
    #[sea_orm(primary_key, auto_increment = false)]
    image: String,
    declared: bool,
    referenced: bool,
});

entity!(aci_images, "aci_images", {
    #[sea_orm(primary_key, auto_increment = false)]
    repo: String,
    #[sea_orm(primary_key, auto_increment = false)]
    version: String,
    #[sea_orm(primary_key, auto_increment = false)]
    os: String,
    #[sea_orm(primary_key, auto_increment = false)]
    arch: String,
    aci_digest: String,
    aci_size: i64,
    image_id: String,
    signature: Option<String>,
    manifest: Vec<u8>,
    created_at: i64,
});

entity!(aci_conversions, "aci_conversions", {
    #[sea_orm(primary_key, auto_increment = false)]
    key: String,
    repo: String,
    source: String,
    aci_digest: String,
    aci_size: i64,
    image_id: String,
    manifest: Vec<u8>,
    created_at: i64,
});

entity!(aci_pubkeys, "aci_pubkeys", {
    #[sea_orm(primary_key, auto_increment = false)]
    namespace: String,
    armored: String,
    updated_at: i64,
});
